"""Turn the train qrels into the training rows the chosen loss needs.

- MNRL family (in-batch negatives): one ``(anchor, positive)`` row per relevant train pair.
- Score family (CoSENT, Cosine): ``(sentence1, sentence2, score)`` rows with a 0..1 label;
  positives are scored from their graded relevance, and each gets one random negative at 0
  drawn from documents the query is not known to be relevant to.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from irtune.beir import BeirDataset, doc_text
from irtune.config import MNRL_FAMILY, Config
from irtune.io import atomic_path

log = logging.getLogger(__name__)


def positive_pairs(dataset: BeirDataset, split: str) -> list[tuple[str, str, int]]:
    """All ``(query id, doc id, grade)`` with grade > 0 in ``split``, in qrels order."""
    return [
        (qid, did, grade)
        for qid, docs in dataset.qrels[split].items()
        for did, grade in docs.items()
        if grade > 0
    ]


def build_rows(dataset: BeirDataset, cfg: Config) -> list[dict[str, str | float]]:
    """Build the training rows for ``cfg.loss.name`` from the train split.

    Args:
        dataset: The BEIR dataset.
        cfg: The whole config (``loss``, ``prepare`` and ``dataset`` sections are read).

    Returns:
        Rows with the column names Sentence Transformers' losses expect, in a seeded order.
    """
    rng = random.Random(cfg.prepare.seed)
    pairs = positive_pairs(dataset, cfg.dataset.train_split)
    if cfg.prepare.max_pairs and cfg.prepare.max_pairs < len(pairs):
        pairs = rng.sample(pairs, cfg.prepare.max_pairs)
    else:
        rng.shuffle(pairs)

    def text(did: str) -> str:
        return doc_text(dataset.corpus[did])

    if cfg.loss.name in MNRL_FAMILY:
        return [{"anchor": dataset.queries[q], "positive": text(d)} for q, d, _ in pairs]

    # Score family: every query's known positives, across all splits, are never negatives.
    known: dict[str, set[str]] = {}
    for qrels in dataset.qrels.values():
        for qid, docs in qrels.items():
            known.setdefault(qid, set()).update(docs)
    max_grade = max(grade for _, _, grade in pairs)
    doc_ids = list(dataset.corpus)
    rows: list[dict[str, str | float]] = []
    for qid, did, grade in pairs:
        query = dataset.queries[qid]
        rows.append({"sentence1": query, "sentence2": text(did), "score": grade / max_grade})
        negative = rng.choice(doc_ids)
        while negative in known[qid]:
            negative = rng.choice(doc_ids)
        rows.append({"sentence1": query, "sentence2": text(negative), "score": 0.0})
    return rows


def write_rows(rows: list[dict[str, str | float]], path: Path) -> None:
    """Write training rows as JSON lines, atomically."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    log.info("Wrote %d training rows to %s", len(rows), path)


def read_rows(path: Path) -> list[dict[str, str | float]]:
    """Read the rows :func:`write_rows` wrote."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]
