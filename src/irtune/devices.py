"""Which accelerator a stage runs on: one sweep member per GPU, and what was used.

``make sweep JOBS=N`` runs N members at once. On a machine with GPUs each GPU-using stage
(train, encode, retrieve, rerank, baseline, prepare's mining) *claims* the devices it needs
before torch initialises CUDA (:func:`claim_devices`): it takes an exclusive ``flock`` on
one lock file per device, under ``.irtune/devices/`` at the repository root the pipeline
logs to (queued experiments share it through ``DVC_ROOT``), and sets
``CUDA_VISIBLE_DEVICES`` to what it holds. With fewer free devices than it needs, it waits:
members never share a GPU. A lock is the kernel's, held by an open file: a crashed holder,
even one killed with SIGKILL, releases it as it dies.

The devices come from ``IRTUNE_DEVICES`` (``0,1``; ``none``: no claims), else from
``CUDA_VISIBLE_DEVICES`` when the user has set it, else from ``nvidia-smi``. On a machine
without GPUs the list is empty and a claim is a no-op: CPU runs are unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from irtune.errors import ConfigError
from irtune.pipeline import repo_root

log = logging.getLogger(__name__)

#: The devices members may claim, comma-separated (``0,1``); ``none`` or "" claims nothing.
DEVICES_ENV = "IRTUNE_DEVICES"
#: What torch (and every CUDA program) reads to know which GPUs it may use.
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
#: Seconds between two attempts of a member waiting for a free device.
POLL_SECONDS = 2.0


def available_devices() -> list[str]:
    """The devices a stage may claim, in order: ``IRTUNE_DEVICES``, else a user's
    ``CUDA_VISIBLE_DEVICES``, else the GPUs ``nvidia-smi`` lists; none on a CPU machine.

    torch is not asked: counting GPUs through it fixes its view of them before
    ``CUDA_VISIBLE_DEVICES`` is set.
    """
    for name in (DEVICES_ENV, VISIBLE_ENV):
        if name in os.environ:
            return _parse(os.environ[name])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s): no GPU is claimed", exc)
        return []
    return _parse(out.replace("\n", ","))


def _parse(value: str) -> list[str]:
    value = value.strip()
    if value.lower() == "none":
        return []
    return [d.strip() for d in value.split(",") if d.strip()]


def lock_dir() -> Path:
    """Where the per-device lock files live: ``.irtune/devices`` at the repository root."""
    return repo_root() / ".irtune" / "devices"


@contextlib.contextmanager
def claim_devices(
    count: int = 1, stage: str = "", poll: float = POLL_SECONDS
) -> Iterator[list[str]]:
    """Hold ``count`` free devices for the duration of the block, waiting until there are.

    The devices are taken all at once or not at all (a member needing two never holds one
    while waiting for the other, so two such members cannot deadlock). Inside the block
    ``CUDA_VISIBLE_DEVICES`` names the claimed devices; it is restored on exit, when the
    locks are released.

    Args:
        count: How many devices the stage needs (``train.devices`` for the train stage);
            0 for a run that loads no model this time: nothing is claimed.
        stage: The claiming stage, written into the lock file for whoever looks.
        poll: Seconds between two attempts while every device is taken.

    Yields:
        The claimed device ids; ``[]`` where there are no devices to claim (a CPU machine).

    Raises:
        ConfigError: If the machine lists fewer devices than ``count``: waiting would never end.
    """
    devices = available_devices() if count else []
    if not devices:
        yield []
        return
    if count > len(devices):
        raise ConfigError(
            f"the stage needs {count} devices but only {len(devices)} are listed "
            f"({','.join(devices)}; see {DEVICES_ENV})"
        )
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    held: dict[str, Any] = {}
    waited = False
    try:
        while len(held) < count:
            for device in devices:
                if len(held) == count:
                    break
                if (handle := _try_lock(folder / f"{device}.lock")) is not None:
                    held[device] = handle
            if len(held) < count:
                for handle in held.values():
                    handle.close()  # all or nothing: let another member have them meanwhile
                held.clear()
                if not waited:
                    log.info("Waiting for %d free device(s) of %s", count, ",".join(devices))
                    waited = True
                time.sleep(poll)
        claimed = list(held)
        for handle in held.values():
            handle.write(f"pid {os.getpid()} {stage}\n")
            handle.flush()
        log.info("%s: claimed device(s) %s", stage or "this process", ",".join(claimed))
        with _environ(VISIBLE_ENV, ",".join(claimed)):
            yield claimed
    finally:
        for handle in held.values():
            handle.close()  # closing the file releases its lock


def _try_lock(path: Path):
    """The open, exclusively locked file ``path``; None if another process holds it."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    return handle


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def describe(precision: str, processes: int) -> dict[str, Any]:
    """What the current process trains on, for ``metrics/train.json`` (and MLflow's tags).

    Args:
        precision: ``train.precision``.
        processes: Data-parallel processes (``train.devices``).

    Returns:
        ``type`` (``cuda`` or ``cpu``), ``name`` (the GPU's, or ``cpu``), ``count`` (the
        processes), ``precision`` and ``claimed`` (the devices :func:`claim_devices` holds,
        as ``CUDA_VISIBLE_DEVICES`` names them; "" without a claim).
    """
    import torch

    cuda = torch.cuda.is_available()
    # This process' GPU: torchrun's LOCAL_RANK among the visible ones (0 for one process).
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return {
        "type": "cuda" if cuda else "cpu",
        "name": torch.cuda.get_device_name(local) if cuda else "cpu",
        "count": processes,
        "precision": precision,
        "claimed": os.environ.get(VISIBLE_ENV, ""),
    }
