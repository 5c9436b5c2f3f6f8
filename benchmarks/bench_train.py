"""Does irtune's train stage cost anything over a plain Sentence Transformers script?

irtune's train code (``irtune.train.train``) against the script a user would write with
``SentenceTransformerTrainer``: the same MNRL loss, rows, batch size, sequence length,
no-duplicates sampler, learning rate and seed, and no dev evaluator on either side.
Interleaved passes, best of each kept, in pairs/s:

- end to end: model load + trainer set-up + train + save, for both;
- the training loop alone: ``trainer.train()``, which irtune reports itself
  (``TrainResult.loop_seconds``) and the plain script times around the call.

Both train on the device Sentence Transformers picks (a GPU when there is one), in
``precision`` (``bf16``/``fp16`` through the trainer's own switches on both sides: the GPU
section). With ``score``, each side's last model is also scored on the test split (dense
search over a flat index, NDCG@10), so a speed-up is seen beside what it did to quality.

Run it through the runner, e.g.::

    PYTHONPATH=src python benchmarks/bench.py --only train --data ../shared/data/nfcorpus \
        --model <folder>
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from irtune.config import Config


def _plain_train(rows: list[dict[str, Any]], model_path: str, cfg: Config, out_dir: Path) -> float:
    """The plain Sentence Transformers script irtune's train stage is measured against.

    Returns:
        The seconds ``trainer.train()`` took.
    """
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(model_path)
    model.max_seq_length = cfg.train.max_seq_length
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "work"),
        num_train_epochs=1,
        per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr,
        warmup_steps=cfg.train.warmup_ratio,
        seed=cfg.train.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        bf16=cfg.train.precision == "bf16",
        fp16=cfg.train.precision == "fp16",
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        loss=MultipleNegativesRankingLoss(model),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.save(str(out_dir / "model"))
    return seconds


def _test_ndcg(model_dir: Path, dataset, batch_size: int) -> float:
    """Test NDCG@10 of a saved bi-encoder: dense search over a flat index of the corpus."""
    from irtune.config import EvaluateConfig, IndexConfig
    from irtune.dense import dense_search
    from irtune.encode import encode_corpus
    from irtune.evaluate import evaluate_run
    from irtune.index import build_index
    from irtune.models import load_encoder

    model = load_encoder(str(model_dir))
    index = build_index(encode_corpus(model, dataset.corpus, batch_size), IndexConfig(type="flat"))
    queries = dataset.split_queries("test")
    run = dense_search(model, index, list(dataset.corpus), queries, 100, batch_size)
    return round(evaluate_run(dataset.qrels["test"], run, EvaluateConfig())[0]["ndcg_at_10"], 4)


def bench_train(
    data: Path,
    model_path: str,
    pairs: int,
    batch_size: int,
    max_seq_length: int,
    repeats: int,
    precision: str = "fp32",
    score: bool = False,
) -> dict[str, Any]:
    """irtune's train code path vs a plain SentenceTransformerTrainer script, interleaved."""
    from irtune.beir import read_beir
    from irtune.config import validate
    from irtune.prepare import build_rows
    from irtune.train import train

    cfg = validate(
        {
            "model": {"base": model_path},
            "prepare": {"max_pairs": pairs},
            "train": {
                "epochs": 1,
                "batch_size": batch_size,
                "max_seq_length": max_seq_length,
                "eval_dev": False,  # the plain script has no evaluator either
                "logging_steps": 10,
                "precision": precision,
            },
        },
        source="bench",
    )
    splits = [cfg.dataset.train_split, cfg.dataset.dev_split] + (["test"] if score else [])
    dataset = read_beir(data, splits)
    rows = build_rows(dataset, cfg)
    runs: dict[str, list[dict[str, float]]] = {"irtune": [], "plain": []}
    ndcg: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="irtune-bench-train-") as tmp:
        for rep in range(repeats):
            work = Path(tmp) / str(rep)
            start = time.perf_counter()
            result = train(rows, dataset, cfg, work / "irtune" / "model", work / "irtune" / "work")
            total = time.perf_counter() - start
            runs["irtune"].append({"total_s": total, "loop_s": result.loop_seconds})
            start = time.perf_counter()
            loop = _plain_train(rows, model_path, cfg, work / "plain")
            runs["plain"].append({"total_s": time.perf_counter() - start, "loop_s": loop})
        if score:
            for name in ("irtune", "plain"):
                ndcg[name] = _test_ndcg(work / name / "model", dataset, batch_size)

    def best(name: str, key: str) -> float:
        return min(r[key] for r in runs[name])

    n = len(rows)
    return {
        "pairs": n,
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
        "loss": "mnrl",
        "precision": precision,
        "repeats": repeats,
        "timing": "end_to_end = model load + trainer set-up + train + save, for both; "
        "loop = trainer.train() alone; best of the repeats",
        "irtune_pairs_per_s_end_to_end": round(n / best("irtune", "total_s"), 2),
        "plain_pairs_per_s_end_to_end": round(n / best("plain", "total_s"), 2),
        "ratio_end_to_end": round(best("plain", "total_s") / best("irtune", "total_s"), 3),
        "irtune_pairs_per_s_loop": round(n / best("irtune", "loop_s"), 2),
        "plain_pairs_per_s_loop": round(n / best("plain", "loop_s"), 2),
        "ratio_loop": round(best("plain", "loop_s") / best("irtune", "loop_s"), 3),
        "runs": {k: [{m: round(s, 2) for m, s in r.items()} for r in v] for k, v in runs.items()},
    } | ({"test_ndcg_at_10": ndcg} if score else {})
