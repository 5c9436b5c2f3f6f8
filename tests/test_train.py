"""Fine-tuning the tiny bi-encoder: pass-through, MNRL and CoSENT training, and the curves."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from irtune.beir import BeirDataset, doc_text, read_beir
from irtune.config import Config, validate
from irtune.models import load_bi_encoder
from irtune.prepare import build_rows
from irtune.train import split_history, train

PROBE = ["does vitamin d prevent fractures", "Statin therapy lowered LDL cholesterol."]


@pytest.fixture(scope="module")
def dataset(tiny_beir: Path) -> BeirDataset:
    return read_beir(tiny_beir, ["train", "dev", "test"])


def _cfg(base: Path, **sections: dict) -> Config:
    raw: dict = {
        "model": {"base": str(base)},
        "train": {"max_seq_length": 64, "batch_size": 8, "logging_steps": 2, "lr": 1e-3},
        "encode": {"batch_size": 32},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return validate(raw)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in load_bi_encoder(str(path)).state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> int:
    """How many of the tensors differ."""
    assert before.keys() == after.keys()
    return sum(not torch.equal(before[k], after[k]) for k in before)


def test_zero_epochs_passes_the_base_model_through(
    dataset: BeirDataset, tiny_bi_encoder: Path, tmp_path: Path
) -> None:
    """epochs=0 saves a model that embeds exactly like the base model, with no curves."""
    cfg = _cfg(tiny_bi_encoder, train={"epochs": 0})
    result = train([], dataset, cfg, tmp_path / "model", tmp_path / "work")
    assert result.summary["epochs"] == 0
    assert result.loss_curve == [] and result.dev_curve == []
    base = load_bi_encoder(str(tiny_bi_encoder)).encode(PROBE, convert_to_numpy=True)
    saved = load_bi_encoder(str(tmp_path / "model"))
    assert saved.max_seq_length == 64
    np.testing.assert_allclose(saved.encode(PROBE, convert_to_numpy=True), base, atol=1e-6)


def test_mnrl_two_epochs(
    dataset: BeirDataset, tiny_bi_encoder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MNRL training changes the weights, reports a loss curve and one dev point per epoch,
    and says early on how long the rest will take."""
    cfg = _cfg(tiny_bi_encoder, train={"epochs": 2}, loss={"name": "mnrl"})
    rows = build_rows(dataset, cfg)
    caplog.set_level(logging.INFO, logger="irtune.train")
    result = train(rows, dataset, cfg, tmp_path / "model", tmp_path / "work")
    left = [r.getMessage() for r in caplog.records if "left" in r.getMessage()]
    steps = result.summary["steps"]
    assert len(left) == 1 and f"4 of {steps} steps done" in left[0], left

    assert _changed(_weights(tiny_bi_encoder), _weights(tmp_path / "model")) > 0

    losses = result.loss_curve
    assert len(losses) >= 2
    assert all(math.isfinite(p["loss"]) and p["loss"] >= 0 for p in losses)
    assert [p["step"] for p in losses] == sorted({p["step"] for p in losses})

    dev = result.dev_curve
    assert [p["epoch"] for p in dev] == [1.0, 2.0]
    assert dev[0]["step"] < dev[1]["step"] == result.summary["steps"]
    for point in dev:
        for key in ("dev_ndcg_at_10", "dev_mrr_at_10", "dev_map_at_100", "dev_recall_at_100"):
            assert 0.0 <= point[key] <= 1.0
        assert not any("@" in k for k in point)

    assert result.summary["epochs"] == 2
    assert result.summary["train_rows"] == len(rows)
    assert math.isfinite(result.summary["train_loss"])
    assert result.summary["dev_ndcg_at_10"] == dev[-1]["dev_ndcg_at_10"]


def test_a_static_embedding_model_trains(dataset: BeirDataset, tmp_path: Path) -> None:
    """A StaticEmbedding base (a bag of token vectors) reads every token: train.max_seq_length
    does not apply to it, and it trains like any other."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding
    from tiny_assets import train_tokenizer

    texts = [doc_text(doc) for doc in dataset.corpus.values()]
    static = StaticEmbedding(train_tokenizer(texts), embedding_dim=16)
    SentenceTransformer(modules=[static, Normalize()], device="cpu").save(str(tmp_path / "base"))
    cfg = _cfg(tmp_path / "base", train={"epochs": 1, "max_seq_length": 64})
    train(build_rows(dataset, cfg), dataset, cfg, tmp_path / "model", tmp_path / "work")
    assert _changed(_weights(tmp_path / "base"), _weights(tmp_path / "model")) > 0
    assert math.isinf(load_bi_encoder(str(tmp_path / "model"), max_seq_length=64).max_seq_length)


def test_cosent_trains_from_score_rows(
    dataset: BeirDataset, tiny_bi_encoder: Path, tmp_path: Path
) -> None:
    """CoSENT trains on (sentence1, sentence2, score) rows; eval_dev=false gives no dev curve."""
    cfg = _cfg(
        tiny_bi_encoder,
        train={"epochs": 1, "eval_dev": False},
        loss={"name": "cosent"},
        prepare={"max_pairs": 40, "negatives": "random"},
    )
    rows = build_rows(dataset, cfg)
    assert set(rows[0]) == {"sentence1", "sentence2", "score"}
    result = train(rows, dataset, cfg, tmp_path / "model", tmp_path / "work")
    assert _changed(_weights(tiny_bi_encoder), _weights(tmp_path / "model")) > 0
    assert result.loss_curve and all(math.isfinite(p["loss"]) for p in result.loss_curve)
    assert result.dev_curve == []
    assert result.summary["steps"] == math.ceil(len(rows) / 8)


def test_split_history() -> None:
    """Trainer log entries split into a loss curve and a dev curve with '@'-free names."""
    history = [
        {"loss": 2.5, "learning_rate": 1e-5, "epoch": 0.25, "step": 1},
        {"loss": 1.5, "learning_rate": 2e-5, "epoch": 0.5, "step": 2},
        {
            "eval_dev_cosine_ndcg@10": 0.41234567,
            "eval_dev_cosine_recall@100": 0.9,
            "eval_dev_cosine_accuracy@1": 0.5,
            "eval_runtime": 0.3,
            "epoch": 1.0,
            "step": 4,
        },
        {"train_runtime": 3.0, "train_loss": 2.0, "epoch": 1.0, "step": 4},
    ]
    loss_curve, dev_curve = split_history(history)
    assert loss_curve == [
        {"step": 1, "epoch": 0.25, "loss": 2.5, "learning_rate": 1e-5},
        {"step": 2, "epoch": 0.5, "loss": 1.5, "learning_rate": 2e-5},
    ]
    assert dev_curve == [
        {
            "step": 4,
            "epoch": 1.0,
            "dev_ndcg_at_10": 0.412346,
            "dev_recall_at_100": 0.9,
            "dev_accuracy_at_1": 0.5,
        }
    ]
