"""Fine-tune the bi-encoder with Sentence Transformers' trainer, from the base model, for
the full epoch count, in one learning-rate schedule.

Every experiment starts from ``model.base``: continuing training after a finished schedule
restarts warmup and degrades the model, so a longer run is a new run with more epochs. The
dev split is evaluated at each epoch end *inside* that schedule, which gives the per-epoch
curve without ever training twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from irtune.beir import BeirDataset, doc_text
from irtune.config import MNRL_FAMILY, Config, flatten
from irtune.devices import describe
from irtune.errors import ConfigError
from irtune.launch import is_main_process
from irtune.models import load_base_model, prompts, save_model

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run reports: a summary and the curves, in log order."""

    summary: dict[str, float] = field(default_factory=dict)
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    dev_curve: list[dict[str, float]] = field(default_factory=list)
    #: What trained: ``type``, ``name``, ``count``, ``precision``, ``claimed``
    #: (:func:`irtune.devices.describe`); strings, so MLflow tags rather than metrics.
    device: dict[str, Any] = field(default_factory=dict)
    #: Seconds ``trainer.train()`` took (0 without training). Wall time varies from run to
    #: run, so it stays out of :meth:`history`, which must be identical for identical runs.
    loop_seconds: float = 0.0

    def history(self) -> dict[str, Any]:
        """The summary and the curves: the train stage's ``metrics/train.json``."""
        return {
            "summary": self.summary,
            "device": self.device,
            "loss_curve": self.loss_curve,
            "dev_curve": self.dev_curve,
        }


def checkpoint_dir(root: Path, rows_path: Path, cfg: Config) -> Path:
    """Where an experiment's checkpoints go: ``<root>/.irtune/checkpoints/<key>``.

    The key hashes the training rows and every param ``cfg`` lets the stage read (the
    stage's config is scoped to the params ``dvc.yaml`` lists for it): rerunning the same
    experiment after a crash finds its checkpoints, and an experiment with other params
    never resumes from another's.
    """
    digest = hashlib.sha256(rows_path.read_bytes())
    digest.update(json.dumps(flatten(cfg), sort_keys=True).encode())
    return root / ".irtune" / "checkpoints" / digest.hexdigest()[:16]


def build_loss(cfg: Config, model):
    """The loss the ``loss`` config group names, wrapped around ``model``.

    With ``train.devices`` > 1 the in-batch losses gather every process' embeddings
    (``gather_across_devices``): each anchor meets the whole global batch's negatives, as in
    one process.
    """
    from sentence_transformers.sentence_transformer import losses

    name = cfg.loss.name
    # Only passed when gathering, so a single process builds the loss exactly as before.
    gather = {"gather_across_devices": True} if cfg.train.devices > 1 else {}
    if name == "mnrl":
        return losses.MultipleNegativesRankingLoss(model, scale=cfg.loss.scale, **gather)
    if name == "cached_mnrl":
        return losses.CachedMultipleNegativesRankingLoss(
            model, scale=cfg.loss.scale, mini_batch_size=cfg.loss.mini_batch_size, **gather
        )
    if name in ("gist", "cached_gist"):
        # The guide (by default the untouched base model) masks in-batch negatives it finds
        # more similar to the anchor than the positive: NFCorpus' many shared positives.
        guide = load_base_model(cfg, cfg.loss.guide, max_seq_length=cfg.train.max_seq_length)
        if name == "gist":
            return losses.GISTEmbedLoss(model, guide, temperature=cfg.loss.temperature, **gather)
        return losses.CachedGISTEmbedLoss(
            model,
            guide,
            temperature=cfg.loss.temperature,
            mini_batch_size=cfg.loss.mini_batch_size,
            **gather,
        )
    if name == "cosent":
        return losses.CoSENTLoss(model, scale=cfg.loss.scale)
    if name == "cosine":
        return losses.CosineSimilarityLoss(model)
    raise ConfigError(f"loss.name: unknown loss {name!r}")


#: The text columns that hold queries; the others (positive, negative_n, sentence2) hold
#: documents, and the score column no text.
QUERY_COLUMNS = ("anchor", "sentence1")
SCORE_COLUMN = "score"


def column_prompts(model, columns: list[str]) -> dict[str, str] | None:
    """The prompt of each text column for the trainer: the model's query prompt for query
    columns, its document prompt for the others; None when it has neither (no prompts)."""
    query, document = prompts(model)
    if not (query or document):
        return None
    return {
        column: query if column in QUERY_COLUMNS else document
        for column in columns
        if column != SCORE_COLUMN
    }


def dev_evaluator(dataset: BeirDataset, cfg: Config, model):
    """An IR evaluator over the dev split and the whole corpus, with ``model``'s prompts."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    qrels = dataset.qrels[cfg.dataset.dev]
    return InformationRetrievalEvaluator(
        queries=dataset.split_queries(cfg.dataset.dev),
        corpus={did: doc_text(doc) for did, doc in dataset.corpus.items()},
        relevant_docs={qid: {d for d, g in docs.items() if g > 0} for qid, docs in qrels.items()},
        ndcg_at_k=[cfg.evaluate.ndcg_k],
        mrr_at_k=[cfg.evaluate.mrr_k],
        map_at_k=[cfg.evaluate.map_k],
        precision_recall_at_k=[cfg.evaluate.recall_k],
        accuracy_at_k=[1],
        batch_size=cfg.encode.batch_size,
        name="dev",
        write_csv=False,
        query_prompt=prompts(model)[0] or None,
        corpus_prompt=prompts(model)[1] or None,
    )


def train(
    rows: list[dict[str, Any]],
    dataset: BeirDataset,
    cfg: Config,
    out_dir: Path,
    work_dir: Path,
) -> TrainResult:
    """Train from ``model.base`` and save the final model to ``out_dir``, atomically.

    With ``train.checkpoint_steps`` > 0 the trainer checkpoints model, optimizer, scheduler,
    RNG and data position into ``work_dir`` every that many steps, and a rerun resumes from
    the last checkpoint there: the same LR schedule continues, it never restarts. The caller
    gives each distinct experiment its own ``work_dir`` (:func:`checkpoint_dir`); a finished
    run removes it, since nothing is left to resume.

    Args:
        rows: Training rows from the prepare stage.
        dataset: The BEIR dataset (the dev split and corpus feed the per-epoch evaluation).
        cfg: The whole config.
        out_dir: Where the trained SentenceTransformer goes.
        work_dir: The trainer's folder: checkpoints, when enabled.

    Returns:
        The summary and the loss and dev curves.
    """
    import datasets
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers

    # 1. The base model, with the sequence length the whole experiment uses.
    if cfg.train.epochs:
        check_precision(cfg.train.precision)
    model = load_base_model(cfg, max_seq_length=cfg.train.max_seq_length)
    result = TrainResult(device=describe(cfg.train.precision, cfg.train.devices))

    # 2. Zero epochs: the base model itself, so zero-shot baselines run through the same DAG.
    if cfg.train.epochs == 0:
        log.info("train.epochs=0: passing the base model %s through", cfg.model.base)
        if is_main_process():
            save_model(model, out_dir)
        result.summary = {"epochs": 0, "steps": 0, "train_rows": 0}
        return result

    eval_dev = cfg.train.eval_dev and bool(cfg.dataset.dev)
    if cfg.train.eval_dev and not eval_dev:
        log.warning("train.eval_dev: the dataset has no dev split, so there is no dev curve")

    # 3. The loss and its data. The MNRL family treats every other in-batch positive as a
    #    negative, so a batch must not hold the same text twice: the no-duplicates sampler.
    loss = build_loss(cfg, model)
    train_dataset = datasets.Dataset.from_list(rows)
    sampler = (
        BatchSamplers.NO_DUPLICATES if cfg.loss.name in MNRL_FAMILY else BatchSamplers.BATCH_SAMPLER
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=cfg.train.epochs,
        per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr,
        warmup_steps=cfg.train.warmup_ratio,  # a float below 1 is a ratio of all steps
        weight_decay=cfg.train.weight_decay,
        seed=cfg.train.seed,
        data_seed=cfg.train.seed,
        batch_sampler=sampler,
        eval_strategy="epoch" if eval_dev else "no",
        save_strategy="steps" if cfg.train.checkpoint_steps else "no",
        save_steps=cfg.train.checkpoint_steps or 500,
        save_total_limit=1,
        logging_steps=cfg.train.logging_steps,
        logging_first_step=True,
        report_to="none",  # MLflow logging happens once per pipeline run, in evaluate
        prompts=column_prompts(model, train_dataset.column_names),
        # Several processes hold equal slices of every batch: see data_parallel_arguments.
        dataloader_drop_last=cfg.train.devices > 1,
        **precision_arguments(cfg.train.precision),
        **data_parallel_arguments(cfg.train.devices),
    )

    # 4. Train, evaluating on dev at each epoch end inside the one schedule.
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        loss=loss,
        evaluator=dev_evaluator(dataset, cfg, model) if eval_dev else None,
        callbacks=[TimeLeft(), *([SamplerEpoch()] if cfg.train.devices > 1 else [])],
    )
    log.info(
        "Training %s with %s on %d rows for %d epoch(s), batch %d, on %d %s process(es) in %s",
        cfg.model.base,
        cfg.loss.name,
        len(rows),
        cfg.train.epochs,
        cfg.train.batch_size,
        cfg.train.devices,
        result.device["type"],
        cfg.train.precision,
    )
    # Every process resumes from the same checkpoint; rank 0 alone removes torn ones.
    resume = (
        last_checkpoint(work_dir, tidy=is_main_process()) if cfg.train.checkpoint_steps else None
    )
    if resume:
        log.info("Resuming the interrupted schedule from %s", resume)
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start

    # 5. Save (one process: rank 0), then report what happened.
    if is_main_process():
        save_model(model, out_dir)
        log.info("Saved the trained model to %s", out_dir)
        shutil.rmtree(work_dir, ignore_errors=True)  # finished: nothing left to resume
    result.loop_seconds = seconds
    result.loss_curve, result.dev_curve = split_history(trainer.state.log_history)
    result.summary = {
        "epochs": cfg.train.epochs,
        "steps": trainer.state.global_step,
        "train_rows": len(rows),
        "train_loss": round(float(output.training_loss), 6),
    }
    if result.dev_curve:
        result.summary.update(
            {k: v for k, v in result.dev_curve[-1].items() if k.startswith("dev_")}
        )
    log.info("Trained %d steps in %.1fs", trainer.state.global_step, seconds)
    return result


def check_precision(precision: str) -> None:
    """Refuse mixed precision on a machine without CUDA.

    A silent fall-back to fp32 would record a run as ``bf16`` that was not: a sweep
    comparing precisions would compare fp32 with itself. So the stage stops, saying so.

    Raises:
        ConfigError: If ``precision`` is ``bf16`` or ``fp16`` and torch sees no CUDA device.
    """
    import torch

    if precision != "fp32" and not torch.cuda.is_available():
        raise ConfigError(
            f"'train.precision' is {precision!r}, mixed precision on a CUDA GPU, but this "
            "machine has none: set train.precision=fp32 to train on the CPU"
        )


def precision_arguments(precision: str) -> dict[str, bool]:
    """The trainer's own mixed-precision switches for ``train.precision``; none for fp32,
    so a full-precision run is built exactly as before."""
    return {"bf16": True} if precision == "bf16" else {"fp16": True} if precision == "fp16" else {}


def data_parallel_arguments(devices: int) -> dict[str, Any]:
    """The trainer's arguments for ``devices`` data-parallel processes; none for one.

    ``train.batch_size`` stays the *global* batch: the sampler draws whole batches of that
    size (the no-duplicates sampler: no text twice in the global batch, which every process'
    anchors see through the gathering losses) and Accelerate gives each process its slice
    (``split_batches``), so steps, learning-rate schedule and loss are those of one process
    with the same batch. Every process must hold an equal slice for the gather, so the last
    incomplete batch of an epoch is dropped: an epoch is ``rows // batch_size`` steps.
    """
    if devices == 1:
        return {}
    import torch

    if torch.cuda.is_available():
        return {"accelerator_config": {"split_batches": True}, "ddp_backend": "nccl"}
    # Accelerate takes several CPU processes for a distributed run only when told to use the CPU.
    return {"accelerator_config": {"split_batches": True}, "ddp_backend": "gloo", "use_cpu": True}


class TimeLeft(TrainerCallback):
    """Says, once the first steps are timed, how long the rest of the schedule will take:
    on a CPU a full recipe can take hours, and the user should know before waiting."""

    #: Steps timed before the estimate: the first ones include warm-up allocations.
    TIMED_STEPS = 3

    def __init__(self) -> None:
        self.start: tuple[int, float] | None = None

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if self.start is None:
            self.start = (state.global_step, time.perf_counter())
            return
        step, since = self.start
        if state.global_step == step + self.TIMED_STEPS:
            per_step = (time.perf_counter() - since) / self.TIMED_STEPS
            left = (state.max_steps - state.global_step) * per_step
            log.info(
                "Training: %d of %d steps done at %.1f s a step: about %s left",
                state.global_step,
                state.max_steps,
                per_step,
                _duration(left),
            )


class SamplerEpoch(TrainerCallback):
    """Gives the batch sampler its epoch at each epoch start, however deeply it is wrapped.

    Under DDP Accelerate wraps the sampler in its shard, and a resumed epoch wraps that in
    a skip sampler: transformers then sets the epoch on the shard's wrapper only, and the
    sampler would draw the rest of a resumed epoch in the first epoch's order (its seed is
    ``seed + epoch``). One process needs no help: this is added only with several.
    """

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs) -> None:
        sampler = getattr(train_dataloader, "batch_sampler", None)
        while (inner := getattr(sampler, "batch_sampler", None)) is not None:
            sampler = inner
        if hasattr(sampler, "set_epoch"):
            # state.epoch is the epochs done so far: a whole number at an epoch's start, and
            # the resumed fraction (1.33: 1 epoch and a third done) when resuming inside one.
            sampler.set_epoch(int(state.epoch or 0))


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 1:
        return f"{seconds:.0f} s"
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def last_checkpoint(work_dir: Path, tidy: bool = True) -> str | None:
    """The newest complete trainer checkpoint in ``work_dir``, if any.

    The trainer writes ``trainer_state.json`` last, so a folder without it was being saved
    when the run was killed: it is removed (``tidy``; one process of several does it), and
    the previous checkpoint is used.
    """
    steps = sorted(
        (p for p in work_dir.glob("checkpoint-*") if p.name.removeprefix("checkpoint-").isdigit()),
        key=lambda p: int(p.name.removeprefix("checkpoint-")),
        reverse=True,
    )
    for checkpoint in steps:
        if (checkpoint / "trainer_state.json").is_file():
            return str(checkpoint)
        if not tidy:
            continue
        log.warning("Removing %s: the run was killed while saving it", checkpoint)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def split_history(history: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Split the trainer's log history into a loss curve and a dev-metric curve.

    Evaluator keys such as ``eval_dev_cosine_ndcg@10`` become ``dev_ndcg_at_10``.
    """
    loss_curve, dev_curve = [], []
    for entry in history:
        if "loss" in entry:
            loss_curve.append(
                {
                    "step": entry["step"],
                    "epoch": round(entry["epoch"], 4),
                    "loss": round(float(entry["loss"]), 6),
                    "learning_rate": float(entry.get("learning_rate", 0.0)),
                }
            )
        dev = {
            _metric_name(k): round(float(v), 6)
            for k, v in entry.items()
            if k.startswith("eval_dev_cosine_")
        }
        if dev:
            dev_curve.append({"step": entry["step"], "epoch": round(entry["epoch"], 4), **dev})
    return loss_curve, dev_curve


def _metric_name(key: str) -> str:
    # eval_dev_cosine_ndcg@10 -> dev_ndcg_at_10; metric names carry no '@'.
    name = key.removeprefix("eval_dev_cosine_")
    return "dev_" + re.sub(r"@(\d+)", r"_at_\1", name)
