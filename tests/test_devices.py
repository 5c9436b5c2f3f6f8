"""One sweep member per device: claims through flock, with the device list given by
IRTUNE_DEVICES (no GPU here), between real processes.

Each holder is a separate Python process that claims, reports what it holds (and its
CUDA_VISIBLE_DEVICES) into a file, and holds until told to release or killed.
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

from irtune.devices import VISIBLE_ENV, available_devices, claim_devices
from irtune.errors import ConfigError

#: A member: claims ``count`` devices, writes {"claimed", "visible"} to ``report``, then
#: holds them until ``release`` exists.
HOLDER = """
import json, os, sys, time
from pathlib import Path
from irtune.devices import claim_devices
count, report, release = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
with claim_devices(count, "test", poll=0.05) as claimed:
    visible = os.environ["CUDA_VISIBLE_DEVICES"]
    report.write_text(json.dumps({"claimed": claimed, "visible": visible}))
    while not release.exists():
        time.sleep(0.02)
"""


class Holder:
    """One holder process and its files."""

    def __init__(self, tmp: Path, name: str, devices: str, count: int = 1):
        self.report, self.release = tmp / f"{name}.json", tmp / f"{name}.release"
        env = os.environ | {"IRTUNE_DEVICES": devices, "DVC_ROOT": str(tmp / "repo")}
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        env.pop(VISIBLE_ENV, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(count), str(self.report), str(self.release)],
            env=env,
        )

    def claimed(self, within: float) -> list[str] | None:
        """What it holds, once it reports it within ``within`` seconds; None if it does not."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.report.exists() and self.report.read_text():
                report = json.loads(self.report.read_text())
                assert report["visible"] == ",".join(report["claimed"])
                return report["claimed"]
            assert self.proc.poll() is None, "the holder died"
            time.sleep(0.05)
        return None

    def finish(self) -> None:
        self.release.touch()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


#: Seconds a process gets to start Python and claim a free device on this loaded machine.
START = 60
#: Seconds a waiting member is watched to see that it does not claim a taken device.
WAIT = 1.5


@pytest.fixture
def holders(tmp_path: Path):
    started: list[Holder] = []

    def start(name: str, devices: str, count: int = 1) -> Holder:
        started.append(Holder(tmp_path, name, devices, count))
        return started[-1]

    yield start
    for holder in started:
        holder.kill()


def test_with_one_device_the_second_member_waits_for_the_first(holders) -> None:
    first = holders("first", "0")
    assert first.claimed(START) == ["0"]
    second = holders("second", "0")
    assert second.claimed(WAIT) is None, "two members shared one device"
    first.finish()
    assert second.claimed(START) == ["0"]
    second.finish()


def test_with_two_devices_two_members_run_at_once_on_different_ones(holders) -> None:
    first, second = holders("first", "0,1"), holders("second", "0,1")
    claims = [first.claimed(START), second.claimed(START)]
    assert sorted(c[0] for c in claims if c) == ["0", "1"], claims
    first.finish()
    second.finish()


def test_a_killed_holder_releases_its_device(holders) -> None:
    """flock belongs to the open file: a SIGKILLed holder's lock dies with it."""
    first = holders("first", "0")
    assert first.claimed(START) == ["0"]
    first.kill()
    second = holders("second", "0")
    assert second.claimed(START) == ["0"]
    second.finish()


def test_a_claim_of_two_waits_without_holding_one(holders) -> None:
    """All or nothing: a member needing two devices while one is taken holds neither, so
    a member needing one still gets the free one."""
    first = holders("first", "0,1")
    assert first.claimed(START) is not None
    pair = holders("pair", "0,1", count=2)
    assert pair.claimed(WAIT) is None
    first.finish()
    assert sorted(pair.claimed(START) or []) == ["0", "1"]
    pair.finish()


def test_device_list_and_refusals(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """IRTUNE_DEVICES first, then a user's CUDA_VISIBLE_DEVICES; `none` claims nothing and
    leaves the environment alone; a claim of more devices than listed fails at once."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv(VISIBLE_ENV, "3")
    monkeypatch.setenv("IRTUNE_DEVICES", " 0, 1 ")
    assert available_devices() == ["0", "1"]
    monkeypatch.delenv("IRTUNE_DEVICES")
    assert available_devices() == ["3"]
    monkeypatch.setenv("IRTUNE_DEVICES", "none")
    with claim_devices(1) as claimed:
        assert claimed == [] and os.environ[VISIBLE_ENV] == "3"
    monkeypatch.setenv("IRTUNE_DEVICES", "0")
    with claim_devices(0) as claimed:
        assert claimed == []
    with claim_devices(1) as claimed:
        assert claimed == ["0"] and os.environ[VISIBLE_ENV] == "0"
    assert os.environ[VISIBLE_ENV] == "3", "the claim restores the environment"
    assert (tmp_path / ".irtune" / "devices" / "0.lock").is_file()
    with pytest.raises(ConfigError, match="needs 2 devices but only 1"), claim_devices(2):
        pass


def test_the_train_stage_records_its_claimed_device(
    tmp_path: Path, tiny_assets: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train stage claims a device at start and metrics/train.json says which."""
    monkeypatch.setenv("IRTUNE_DEVICES", "0")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv(VISIBLE_ENV, raising=False)
    ws = StageWorkspace(tmp_path, tiny_params(tiny_assets, train={"epochs": 0}), tiny_assets)
    ws.raw()
    ws.rows()
    ws.write_params()
    ws.run("train")
    device = json.loads(ws.path("metrics/train.json").read_text())["device"]
    assert device == {
        "type": "cpu",
        "name": "cpu",
        "count": 1,
        "precision": "fp32",
        "claimed": "0",
    }
    assert VISIBLE_ENV not in os.environ


def test_the_device_becomes_mlflow_tags() -> None:
    """metrics/train.json's device object becomes string tags (tracking.device_tags)."""
    from irtune.tracking import device_tags

    history = {"device": {"type": "cuda", "name": "NVIDIA H200", "count": 2, "claimed": "0,1"}}
    assert device_tags(history) == {
        "device.type": "cuda",
        "device.name": "NVIDIA H200",
        "device.count": "2",
        "device.claimed": "0,1",
    }
    assert device_tags({"summary": {}}) == {}  # a history from before devices were recorded
