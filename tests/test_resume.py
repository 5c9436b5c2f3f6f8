"""A train stage killed mid-schedule (SIGKILL) resumes from its last checkpoint and ends with
the same model and curves as an uninterrupted run; another experiment never resumes from it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from safetensors.numpy import load_file

from irtune.config import Config

REPO = Path(__file__).resolve().parents[1]


def _workspace(root: Path, tiny_beir: Path, tiny_bi_encoder: Path, **train) -> Path:
    """A folder with params.yaml and the prepared rows, ready for stages/train.py."""
    root.mkdir()
    params = asdict(Config())
    params["model"]["base"] = str(tiny_bi_encoder)
    params["train"].update(
        {
            "epochs": 2,
            "batch_size": 4,
            "max_seq_length": 32,
            "eval_dev": False,
            "checkpoint_steps": 2,
            "logging_steps": 1,
        }
        | train
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    _stage(
        root,
        "prepare",
        "--data",
        str(tiny_beir),
        "--out",
        "rows.jsonl",
        "--metrics",
        "prepare.json",
    )
    return root


def _cmd(name: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "stages" / f"{name}.py"), *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DVC_ROOT"}
    return env | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _stage(root: Path, name: str, *args: str) -> str:
    out = subprocess.run(
        _cmd(name, *args), cwd=root, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr


TRAIN_ARGS = (
    "--data",
    "{beir}",
    "--rows",
    "rows.jsonl",
    "--out",
    "model",
    "--history",
    "train.json",
)


def _train_args(tiny_beir: Path) -> list[str]:
    return [a.format(beir=tiny_beir) for a in TRAIN_ARGS]


def _checkpoints(root: Path) -> list[Path]:
    return sorted((root / ".irtune" / "checkpoints").glob("*/checkpoint-*"))


def _weights(root: Path) -> dict:
    return load_file(str(root / "model" / "model.safetensors"))


@pytest.mark.e2e
def test_killed_training_resumes_on_the_same_schedule(
    tmp_path: Path, tiny_beir: Path, tiny_bi_encoder: Path
) -> None:
    """SIGKILL after a checkpoint, rerun: same weights, same loss and LR curves."""
    whole = _workspace(tmp_path / "whole", tiny_beir, tiny_bi_encoder)
    _stage(whole, "train", *_train_args(tiny_beir))

    killed = _workspace(tmp_path / "killed", tiny_beir, tiny_bi_encoder)
    proc = subprocess.Popen(
        _cmd("train", *_train_args(tiny_beir)),
        cwd=killed,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    # Kill once a checkpoint past the first is complete (its trainer_state.json is written
    # last), so the rerun has to skip into the middle of the schedule.
    while not any(
        (c / "trainer_state.json").exists() and int(c.name.split("-")[1]) >= 4
        for c in _checkpoints(killed)
    ):
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model").exists(), "a killed stage must leave no model behind"
    assert _checkpoints(killed), "the checkpoint survives the kill"

    # Another experiment (another lr) in the same workspace starts from scratch and leaves
    # the interrupted one's checkpoint alone.
    left = _checkpoints(killed)
    other = yaml.safe_load((killed / "params.yaml").read_text())
    original = (killed / "params.yaml").read_text()
    other["train"]["lr"] = 1e-4
    (killed / "params.yaml").write_text(yaml.safe_dump(other))
    assert "Resuming" not in _stage(killed, "train", *_train_args(tiny_beir))
    assert _checkpoints(killed) == left
    (killed / "params.yaml").write_text(original)

    # A kill can also land while a checkpoint is being written: the trainer writes
    # trainer_state.json last, so such a folder lacks it. Make sure one is there.
    torn = left[-1].parent / "checkpoint-9999"
    torn.mkdir(exist_ok=True)
    (torn / "model.safetensors").write_bytes(b"half a file")

    log = _stage(killed, "train", *_train_args(tiny_beir))
    assert "Resuming the interrupted schedule" in log
    assert "killed while saving" in log
    assert not _checkpoints(killed), "a finished run removes its checkpoints"

    ours, reference = _weights(killed), _weights(whole)
    assert ours.keys() == reference.keys()
    for name in reference:
        assert (ours[name] == reference[name]).all(), f"{name} differs after resuming"
    history = json.loads((killed / "train.json").read_text())
    expected = json.loads((whole / "train.json").read_text())
    assert history["loss_curve"] == expected["loss_curve"]
    assert history["summary"]["steps"] == expected["summary"]["steps"]


def test_last_checkpoint_skips_one_torn_by_a_kill(tmp_path: Path) -> None:
    """The newest complete checkpoint is resumed; a newer one without trainer_state.json
    (killed mid-save) is removed rather than crashing the resume."""
    from irtune.train import last_checkpoint

    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "checkpoint-6").exists()
    assert last_checkpoint(tmp_path / "missing") is None
