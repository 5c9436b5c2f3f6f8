"""The in-domain cross-encoder: trained on the dataset's train split, used by the rerank
stage when ``rerank.model`` is ``trained``.

Sentence Transformers' reranker recipe: each train positive with ``reranker.num_negatives``
hard negatives mined by the base bi-encoder (the prepare stage's miner, so a negative is
never a known positive of its query), as ``(query, passage, label)`` pairs; binary
cross-entropy with the positives weighted by the negatives actually mined per positive;
``CrossEncoderTrainer`` from ``reranker.base`` (by default the base bi-encoder's own
transformer under a new one-logit head). It reranks at inference only: the bi-encoder never
learns from it.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from irtune.beir import BeirDataset, doc_text
from irtune.config import Config, EncodeConfig, PrepareConfig, TrainConfig
from irtune.errors import DataError
from irtune.io import atomic_path
from irtune.mirror import resolve
from irtune.models import NOT_TRAINED, TRAINED
from irtune.prepare import mined_negatives, positive_pairs, select_pairs

log = logging.getLogger(__name__)


def wanted(cfg: Config) -> str:
    """Why the stage trains nothing ("" when it trains)."""
    if cfg.rerank.model != TRAINED:
        return f"rerank.model is {cfg.rerank.model!r}, not {TRAINED!r}"
    if cfg.reranker.epochs == 0:
        return "reranker.epochs is 0"
    return ""


def training_pairs(dataset: BeirDataset, cfg: Config) -> list[tuple[str, str, float]]:
    """``(query, passage, label)``: each selected train positive (label 1) and its mined
    hard negatives (label 0), in a seeded order."""
    rc = cfg.reranker
    mining = Config(
        model=cfg.model,
        prepare=PrepareConfig(
            max_pairs=rc.max_pairs,
            max_pairs_per_query=rc.max_pairs_per_query,
            seed=rc.seed,
            negatives="mined",
            num_negatives=rc.num_negatives,
            mine_relative_margin=rc.mine_relative_margin,
        ),
        train=TrainConfig(max_seq_length=rc.max_length),
        encode=EncodeConfig(batch_size=cfg.encode.batch_size),
    )
    rng = random.Random(rc.seed)
    pairs = select_pairs(positive_pairs(dataset, cfg.dataset.train_split), mining, rng)
    negatives = mined_negatives(pairs, dataset, mining)
    rows = []
    for (qid, did, _), negs in zip(pairs, negatives, strict=True):
        query = dataset.queries[qid]
        rows.append((query, doc_text(dataset.corpus[did]), 1.0))
        rows += [(query, doc_text(dataset.corpus[n]), 0.0) for n in negs]
    rng.shuffle(rows)
    return rows


def train_reranker(dataset: BeirDataset, cfg: Config, out_dir: Path) -> dict[str, Any]:
    """Train the in-domain cross-encoder into ``out_dir`` (atomically), or write the
    ``NOT_TRAINED`` note there when :func:`wanted` says why not.

    Returns:
        The stage's summary (``metrics/reranker.json``): ``trained``, and the pair counts,
        the positives' weight, steps, final loss and wall time, or the reason.

    Raises:
        DataError: If mining left no negative (or there is no positive) to train on.
    """
    reason = wanted(cfg)
    if reason:
        log.info("No cross-encoder to train: %s", reason)
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            (tmp / NOT_TRAINED).write_text(reason + "\n", encoding="utf-8")
        return {"trained": False, "reason": reason}

    import datasets
    import torch
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    rc = cfg.reranker
    start = time.perf_counter()
    rows = training_pairs(dataset, cfg)
    positives = sum(label == 1.0 for _, _, label in rows)
    negatives = len(rows) - positives
    if not positives or not negatives:
        raise DataError(
            f"the cross-encoder needs positives and negatives; mining gave {positives} "
            f"positives and {negatives} negatives (reranker.max_pairs, "
            "reranker.mine_relative_margin)"
        )
    # The positives weigh as much as the negatives together: with num_negatives each, the
    # loss's pos_weight is num_negatives (Sentence Transformers' reranker recipe), but the
    # miner drops candidates that are known positives or too close to the positive, so the
    # weight is the count actually mined. A fixed weight over fewer negatives makes
    # "relevant" the cheapest answer to every pair.
    pos_weight = negatives / positives
    log.info(
        "Training the cross-encoder on %d pairs (%d positives, %d negatives; pos_weight %.3f)",
        len(rows), positives, negatives, pos_weight,
    )  # fmt: skip
    base = resolve(rc.base or cfg.model.base)
    model = CrossEncoder(
        base,
        num_labels=1,
        max_length=rc.max_length,
        trust_remote_code=cfg.model.trust_remote_code,
        device="cpu" if not torch.cuda.is_available() else None,
    )
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pos_weight))
    train = datasets.Dataset.from_dict(
        {
            "query": [q for q, _, _ in rows],
            "passage": [p for _, p, _ in rows],
            "label": [label for _, _, label in rows],
        }
    )
    with tempfile.TemporaryDirectory(prefix="irtune-reranker-") as scratch:
        args = CrossEncoderTrainingArguments(
            output_dir=scratch,
            num_train_epochs=rc.epochs,
            per_device_train_batch_size=rc.batch_size,
            learning_rate=rc.lr,
            warmup_ratio=rc.warmup_ratio,
            seed=rc.seed,
            data_seed=rc.seed,
            save_strategy="no",
            logging_steps=10,
            report_to="none",
            disable_tqdm=True,
        )
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train, loss=loss)
        result = trainer.train()
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(str(tmp))
    summary = {
        "trained": True,
        "base": rc.base or cfg.model.base,
        "pairs": len(rows),
        "positives": positives,
        "negatives": negatives,
        "pos_weight": round(pos_weight, 6),
        "steps": result.global_step,
        "train_loss": round(result.training_loss, 6),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    log.info("Cross-encoder trained: %s", summary)
    return summary
