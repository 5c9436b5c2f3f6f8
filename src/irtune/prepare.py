"""Turn the train qrels into the training rows the chosen loss needs.

1. Positive pairs: every relevant ``(query, doc)`` of the train split, optionally capped per
   query (``prepare.max_pairs_per_query``: a few NFCorpus queries have hundreds of positives
   and would otherwise dominate a subset) and subsampled (``prepare.max_pairs``), seeded.
2. Negatives (``prepare.negatives``): ``none``, ``random`` documents, or ``mined`` with
   Sentence Transformers' ``mine_hard_negatives`` from the base model. A negative is never a
   known positive of its query, in any split.
3. Rows, by loss family:

   - MNRL family (in-batch negatives): ``(anchor, positive)`` or, with negatives,
     ``(anchor, positive, negative_1..n)``.
   - Score family (CoSENT, Cosine): ``(sentence1, sentence2, score)`` with a 0..1 label.
     ``prepare.labels=graded``: positives scored from their graded relevance, negatives 0.
     ``prepare.labels=cross_encoder``: every pair (positives, negatives and the base model's
     top ``label_top_k`` documents) scored by a cross-encoder, sigmoid-normalised.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict

from irtune.beir import BeirDataset, doc_text
from irtune.config import MNRL_FAMILY, SCORE_FAMILY, Config
from irtune.dense import exact_search
from irtune.errors import DataError
from irtune.models import load_base_model, load_cross_encoder, prompts

log = logging.getLogger(__name__)

Pair = tuple[str, str, int]  # (query id, doc id, grade)


def positive_pairs(dataset: BeirDataset, split: str) -> list[Pair]:
    """All ``(query id, doc id, grade)`` with grade > 0 in ``split``, in qrels order."""
    return [
        (qid, did, grade)
        for qid, docs in dataset.qrels[split].items()
        for did, grade in docs.items()
        if grade > 0
    ]


def select_pairs(pairs: list[Pair], cfg: Config, rng: random.Random) -> list[Pair]:
    """Cap positives per query, then subsample; the result is in a seeded random order."""
    if cfg.prepare.max_pairs_per_query:
        by_query: dict[str, list[Pair]] = defaultdict(list)
        for pair in pairs:
            by_query[pair[0]].append(pair)
        pairs = [
            p
            for qid in by_query
            for p in (
                rng.sample(by_query[qid], cfg.prepare.max_pairs_per_query)
                if len(by_query[qid]) > cfg.prepare.max_pairs_per_query
                else by_query[qid]
            )
        ]
    if cfg.prepare.max_pairs and cfg.prepare.max_pairs < len(pairs):
        return rng.sample(pairs, cfg.prepare.max_pairs)
    pairs = list(pairs)
    rng.shuffle(pairs)
    return pairs


def known_positives(dataset: BeirDataset) -> dict[str, set[str]]:
    """Every doc judged for each query, in any split: never to be used as a negative."""
    known: dict[str, set[str]] = defaultdict(set)
    for qrels in dataset.qrels.values():
        for qid, docs in qrels.items():
            known[qid].update(docs)
    return known


def random_negatives(
    pairs: list[Pair], dataset: BeirDataset, num: int, rng: random.Random
) -> list[list[str]]:
    """``num`` random documents per pair, none a known positive of its query."""
    known = known_positives(dataset)
    doc_ids = list(dataset.corpus)
    out = []
    for qid, _, _ in pairs:
        candidates = [
            d for d in rng.sample(doc_ids, min(len(doc_ids), 4 * num + 8)) if d not in known[qid]
        ]
        out.append(candidates[:num])
    return out


#: Candidates mined beyond ``num_negatives`` per pair, to replace those that turn out to be
#: the query's known positives (NFCorpus queries have ~38; the miner knows only the sampled).
_SPARE_NEGATIVES = 50


def uses_models(cfg: Config) -> bool:
    """Whether building the rows runs a model (mining, cross-encoder labels): the stage then
    claims a device (:func:`irtune.devices.claim_devices`)."""
    cross_encoder = cfg.loss.name in SCORE_FAMILY and cfg.prepare.labels == "cross_encoder"
    return cfg.prepare.negatives == "mined" or cross_encoder


def mined_negatives(pairs: list[Pair], dataset: BeirDataset, cfg: Config) -> list[list[str]]:
    """Hard negatives from Sentence Transformers' ``mine_hard_negatives`` with the base model.

    The miner only knows the positives in the pairs it is given; a query's other known
    positives (unsampled train pairs, dev/test judgements) are filtered out afterwards. An
    NFCorpus query has ~38 of them, mostly near the top of its ranking, so the miner returns
    up to ``_SPARE_NEGATIVES`` extra candidates and the first clean ones are kept.
    """
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    model = load_base_model(cfg, cfg.prepare.mine_model, max_seq_length=cfg.train.max_seq_length)
    query_prompt, document_prompt = prompts(model)
    text_to_id = {doc_text(doc): did for did, doc in dataset.corpus.items()}
    window = cfg.prepare.mine_range_max - cfg.prepare.mine_range_min
    mined = mine_hard_negatives(
        datasets.Dataset.from_dict(
            {
                "anchor": [dataset.queries[q] for q, _, _ in pairs],
                "positive": [doc_text(dataset.corpus[d]) for _, d, _ in pairs],
            }
        ),
        model,
        corpus=list(text_to_id),
        range_min=cfg.prepare.mine_range_min,
        range_max=cfg.prepare.mine_range_max,
        relative_margin=cfg.prepare.mine_relative_margin or None,
        num_negatives=min(window, cfg.prepare.num_negatives + _SPARE_NEGATIVES),
        sampling_strategy="top",
        output_format="labeled-list",
        batch_size=cfg.encode.batch_size,
        use_faiss=True,
        verbose=True,
        query_prompt=query_prompt or None,
        corpus_prompt=document_prompt or None,
    )
    # labeled-list keeps one row per input pair, grouped by query: its "positive" column lists
    # the positive first, then the negatives. Rows with no candidate are dropped and rows are
    # reordered, so match them back by text.
    by_pair: dict[tuple[str, str], list[str]] = {}
    for row in mined:
        texts, labels = row["positive"], row["labels"]
        negatives = [text_to_id[t] for t, label in zip(texts, labels, strict=True) if label == 0]
        positive = next(t for t, label in zip(texts, labels, strict=True) if label == 1)
        by_pair[(row["anchor"], positive)] = negatives
    known = known_positives(dataset)
    out = []
    for qid, did, _ in pairs:
        key = (dataset.queries[qid], doc_text(dataset.corpus[did]))
        clean = [n for n in by_pair.get(key, []) if n not in known[qid]]
        out.append(clean[: cfg.prepare.num_negatives])
    return out


def cross_encoder_labels(
    pairs: list[tuple[str, str]], dataset: BeirDataset, cfg: Config
) -> list[float]:
    """Cross-encoder scores of ``(query id, doc id)`` pairs, sigmoid-normalised to 0..1."""
    import torch

    model = load_cross_encoder(
        cfg.prepare.label_model or cfg.rerank.model,
        cfg.rerank.max_length,
        trust_remote_code=cfg.rerank.trust_remote_code,
    )
    scores = model.predict(
        [(dataset.queries[q], doc_text(dataset.corpus[d])) for q, d in pairs],
        batch_size=cfg.rerank.batch_size,
        activation_fn=torch.nn.Sigmoid(),
        convert_to_numpy=True,
        show_progress_bar=True,
    )
    return [round(float(s), 6) for s in scores]


def base_model_top_k(queries: list[str], dataset: BeirDataset, cfg: Config) -> dict[str, list[str]]:
    """The base model's top ``prepare.label_top_k`` documents of each query id."""
    model = load_base_model(cfg, cfg.prepare.mine_model, max_seq_length=cfg.train.max_seq_length)
    run = exact_search(
        model,
        dataset.corpus,
        {q: dataset.queries[q] for q in queries},
        cfg.prepare.label_top_k,
        cfg.encode.batch_size,
        cfg.retrieve.batch_size,
    )
    return {q: list(docs) for q, docs in run.items()}


def build_rows(dataset: BeirDataset, cfg: Config) -> list[dict[str, str | float]]:
    """Build the training rows for ``cfg.loss.name`` from the train split.

    Args:
        dataset: The BEIR dataset (all splits: their judgements are never negatives).
        cfg: The whole config (``loss``, ``prepare``, ``dataset`` and, for mining or
            cross-encoder labels, ``model``, ``train``, ``encode`` and ``rerank``).

    Returns:
        Rows with the column names Sentence Transformers' losses expect, in a seeded order.

        A dataset without a train split (``dataset.train_split`` empty) gives none.

    Raises:
        DataError: If no row can be built from the train split (it has no positive pair,
            or no pair keeps enough clean negatives), naming the dataset's folder.
    """
    if not cfg.dataset.train_split:
        log.info("The dataset has no train split: no training rows")
        return []
    rows = _rows(dataset, cfg)
    if not rows:
        where = f"{dataset.root}: " if dataset.root else ""
        raise DataError(
            f"{where}no training rows (no usable positive pair in split "
            f"'{cfg.dataset.train_split}')"
        )
    return rows


def _rows(dataset: BeirDataset, cfg: Config) -> list[dict[str, str | float]]:
    rng = random.Random(cfg.prepare.seed)
    pairs = select_pairs(positive_pairs(dataset, cfg.dataset.train_split), cfg, rng)
    negatives: list[list[str]] = [[] for _ in pairs]
    if cfg.prepare.negatives == "random":
        negatives = random_negatives(pairs, dataset, cfg.prepare.num_negatives, rng)
    elif cfg.prepare.negatives == "mined":
        negatives = mined_negatives(pairs, dataset, cfg)

    def text(did: str) -> str:
        return doc_text(dataset.corpus[did])

    if cfg.loss.name in MNRL_FAMILY:
        if cfg.prepare.negatives == "none":
            return [{"anchor": dataset.queries[q], "positive": text(d)} for q, d, _ in pairs]
        # Fixed-width rows: a pair without enough clean negatives is dropped, and counted.
        rows = [
            {"anchor": dataset.queries[q], "positive": text(d)}
            | {f"negative_{i + 1}": text(n) for i, n in enumerate(negs)}
            for (q, d, _), negs in zip(pairs, negatives, strict=True)
            if len(negs) == cfg.prepare.num_negatives
        ]
        if len(rows) < len(pairs):
            log.warning(
                "Dropped %d of %d pairs without %d clean negatives",
                len(pairs) - len(rows),
                len(pairs),
                cfg.prepare.num_negatives,
            )
        return rows

    # Score family: (query, doc, label) rows.
    scored: list[tuple[str, str, float]] = []
    max_grade = max((grade for _, _, grade in pairs), default=1)
    for (qid, did, grade), negs in zip(pairs, negatives, strict=True):
        scored.append((qid, did, grade / max_grade))
        scored.extend((qid, n, 0.0) for n in negs)
    if cfg.prepare.labels == "cross_encoder":
        seen = {(q, d) for q, d, _ in scored}
        top = base_model_top_k(sorted({q for q, _, _ in pairs}), dataset, cfg)
        extra = [(q, d) for q, docs in top.items() for d in docs if (q, d) not in seen]
        keys = [(q, d) for q, d, _ in scored] + extra
        labels = cross_encoder_labels(keys, dataset, cfg)
        scored = [(q, d, s) for (q, d), s in zip(keys, labels, strict=True)]
        rng.shuffle(scored)
    return [
        {"sentence1": dataset.queries[q], "sentence2": text(d), "score": s} for q, d, s in scored
    ]
