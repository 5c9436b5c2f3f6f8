"""The in-domain cross-encoder: the train_reranker stage on the tiny data, end to end into
the rerank stage, and the stage's refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from harness import StageWorkspace, tiny_params

from irtune.beir import read_beir
from irtune.models import NOT_TRAINED, load_cross_encoder
from irtune.runs import read_trec_run

#: A few steps on the tiny data: 2 positives per train query, 2 mined negatives each.
RERANKER = {"max_pairs": 0, "max_pairs_per_query": 2, "num_negatives": 2, "batch_size": 8,
            "max_length": 64, "mine_relative_margin": 0.0}  # fmt: skip


def test_the_stage_trains_a_cross_encoder_that_reranks(
    tmp_path: Path, tiny_assets: dict[str, Path]
) -> None:
    """With rerank.model=trained, train_reranker trains from the base bi-encoder's
    transformer on the train positives and their mined negatives, saves a cross-encoder that
    loads, and the rerank stage reranks with it (choosing its fusion on dev)."""
    params = tiny_params(tiny_assets, rerank={"model": "trained"}, reranker=RERANKER)
    ws = StageWorkspace(tmp_path, params, tiny_assets)
    ws.write_params()
    ws.raw()
    ws.run("train_reranker")

    summary = json.loads(ws.path("metrics/reranker.json").read_text(encoding="utf-8"))
    train = read_beir(tiny_assets["beir"], ["train"]).qrels["train"]
    positives = sum(min(2, sum(g > 0 for g in docs.values())) for docs in train.values())
    assert summary["trained"] is True, summary
    assert summary["positives"] == positives
    assert positives < summary["pairs"] <= 3 * positives, summary  # up to 2 negatives each
    # The positives weigh as much as the negatives mined, whatever the miner dropped.
    assert summary["negatives"] == summary["pairs"] - positives, summary
    assert summary["pos_weight"] == pytest.approx(summary["negatives"] / positives), summary
    assert summary["steps"] == -(-summary["pairs"] // 8), summary  # one epoch of batches of 8
    model = load_cross_encoder(str(ws.path("data/reranker")), 64)
    assert model.num_labels == 1

    ws.retrieve_run()
    ws.run("rerank")
    reranked = read_trec_run(ws.path("data/runs/rerank.trec"))
    retrieved = read_trec_run(ws.path("data/runs/retrieve.trec"))
    assert {q: set(d) for q, d in reranked.items()} == {q: set(d) for q, d in retrieved.items()}
    choices = json.loads(ws.path("metrics/rerank.json").read_text(encoding="utf-8"))
    assert {"depth", "ce_weight", "dev_ndcg_at_10"} <= set(choices), choices


def test_without_rerank_model_trained_the_stage_trains_nothing(
    tmp_path: Path, tiny_assets: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Any other rerank.model: a note in seconds, no model; rerank.model=trained with such a
    note is one clear error naming why, never a traceback."""
    params = tiny_params(tiny_assets, reranker=RERANKER)
    ws = StageWorkspace(tmp_path, params, tiny_assets)
    ws.write_params()
    ws.raw()
    ws.run("train_reranker")
    note = (ws.path("data/reranker") / NOT_TRAINED).read_text(encoding="utf-8")
    assert "rerank.model is" in note and "not 'trained'" in note, note
    summary = json.loads(ws.path("metrics/reranker.json").read_text(encoding="utf-8"))
    assert summary == {"trained": False, "reason": note.strip()}

    ws.params["rerank"]["model"] = "trained"
    ws.write_params()
    ws.retrieve_run()
    caplog.set_level(logging.ERROR)
    with pytest.raises(SystemExit) as exit_info:
        ws.run("rerank")
    assert exit_info.value.code == 1
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "trained no cross-encoder: rerank.model is" in error, error
    assert not ws.path("data/runs/rerank.trec").exists()


def test_the_trained_cross_encoder_never_labels_the_bi_encoders_pairs(
    tiny_assets: dict[str, Path],
) -> None:
    """prepare.labels=cross_encoder with the label model defaulting to rerank.model=trained
    fails at load, naming the key: the trained cross-encoder reranks, it never teaches."""
    from irtune.config import validate
    from irtune.errors import ConfigError

    params = tiny_params(tiny_assets, rerank={"model": "trained"},
                         prepare={"labels": "cross_encoder", "negatives": "mined"},
                         loss={"name": "cosent"})  # fmt: skip
    with pytest.raises(ConfigError, match=r"'prepare\.label_model'"):
        validate(params)
