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
from pathlib import Path

import pytest
from harness import StageWorkspace, tiny_params
from safetensors.numpy import load_file

from irtune.workspace import clean_env

#: Two epochs of 18 steps, a checkpoint every 2: a kill lands mid-schedule.
TRAIN = {
    "epochs": 2,
    "batch_size": 4,
    "max_seq_length": 32,
    "eval_dev": False,
    "checkpoint_steps": 2,
    "logging_steps": 1,
}


def _workspace(root: Path, assets: dict[str, Path]) -> StageWorkspace:
    """A workspace with the dataset and its prepared rows, ready for the train stage."""
    ws = StageWorkspace(root, tiny_params(assets, train=TRAIN), assets)
    ws.link_code()
    ws.raw()
    ws.write_params()
    _stage(ws, "prepare")
    return ws


def _env() -> dict[str, str]:
    return clean_env(Path(sys.executable).parent, PYTHONUNBUFFERED="1")


def _stage(ws: StageWorkspace, name: str) -> str:
    """Run stage ``name`` as DVC does (dvc.yaml's command, in a shell); return its log."""
    out = subprocess.run(
        ws.shell(name), cwd=ws.root, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr


def _checkpoints(ws: StageWorkspace) -> list[Path]:
    return sorted((ws.root / ".irtune" / "checkpoints").glob("*/checkpoint-*"))


def _weights(ws: StageWorkspace) -> dict:
    return load_file(str(ws.path("data/model") / "model.safetensors"))


@pytest.mark.e2e
def test_killed_training_resumes_on_the_same_schedule(
    tmp_path: Path, tiny_assets: dict[str, Path]
) -> None:
    """SIGKILL after a checkpoint, rerun: same weights, same loss and LR curves."""
    whole = _workspace(tmp_path / "whole", tiny_assets)
    _stage(whole, "train")

    killed = _workspace(tmp_path / "killed", tiny_assets)
    proc = subprocess.Popen(
        killed.shell("train"),
        cwd=killed.root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the shell and its python: killed together
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
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not killed.path("data/model").exists(), "a killed stage must leave no model behind"
    assert _checkpoints(killed), "the checkpoint survives the kill"

    # Another experiment (another lr) in the same workspace starts from scratch and leaves
    # the interrupted one's checkpoint alone.
    left = _checkpoints(killed)
    killed.params["train"]["lr"] = 1e-4
    killed.write_params()
    assert "Resuming" not in _stage(killed, "train")
    assert _checkpoints(killed) == left
    killed.params["train"]["lr"] = tiny_params(tiny_assets)["train"]["lr"]
    killed.write_params()

    # A kill can also land while a checkpoint is being written: the trainer writes
    # trainer_state.json last, so such a folder lacks it. Make sure one is there.
    torn = left[-1].parent / "checkpoint-9999"
    torn.mkdir(exist_ok=True)
    (torn / "model.safetensors").write_bytes(b"half a file")

    log = _stage(killed, "train")
    assert "Resuming the interrupted schedule" in log
    assert "killed while saving" in log
    assert not _checkpoints(killed), "a finished run removes its checkpoints"

    ours, reference = _weights(killed), _weights(whole)
    assert ours.keys() == reference.keys()
    for name in reference:
        assert (ours[name] == reference[name]).all(), f"{name} differs after resuming"
    history = json.loads(killed.path("metrics/train.json").read_text())
    expected = json.loads(whole.path("metrics/train.json").read_text())
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
