"""Several processes in one training: the train stage under torch's own launcher.

``train.devices: N`` (N > 1) makes the train stage run as N data-parallel processes (DDP:
NCCL on GPUs, gloo on a CPU). ``dvc.yaml``'s command stays one command: the stage script,
started once by DVC, claims N devices (:func:`irtune.devices.claim_devices`) and starts
itself again under ``python -m torch.distributed.run --standalone --nproc-per-node N``
(:func:`run_under_torchrun`), then waits. Each of those processes sees the launch in its
environment (:func:`in_launch`) and trains; only rank 0 (:func:`is_main_process`) writes
the model, the checkpoints' shared files, the metrics and the plots.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from irtune.devices import claim_devices
from irtune.errors import IrtuneError

log = logging.getLogger(__name__)

#: Set by torchrun in every process it starts.
LAUNCH_ENV = "TORCHELASTIC_RUN_ID"
#: Linux's prctl option that signals a process when its parent dies.
_PR_SET_PDEATHSIG = 1


class LaunchError(IrtuneError):
    """A process of a multi-process training failed (its own message is in the log above)."""


def in_launch() -> bool:
    """Whether this process was started by torchrun (it is one of the N processes)."""
    return LAUNCH_ENV in os.environ


def rank() -> int:
    """This process' rank among all of the training's processes (0 outside a launch)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes the outputs: rank 0, or the only process."""
    return rank() == 0


def run_under_torchrun(script: Path, args: argparse.Namespace, processes: int, stage: str) -> None:
    """Run ``script`` with ``args`` as ``processes`` data-parallel processes, and wait.

    The devices are claimed here, once for the whole training, and the processes inherit
    them through ``CUDA_VISIBLE_DEVICES`` (process ``i`` uses the ``i``-th).

    Args:
        script: The stage script (``stages/train.py``).
        args: Its parsed arguments, passed on as they were given.
        processes: How many processes (``train.devices``).
        stage: The stage's name, for the device claim and messages.

    Raises:
        LaunchError: If a process fails; torchrun then stops the others.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # one machine: a local rendezvous on a free port
        f"--nproc-per-node={processes}",
        str(script),
        *as_argv(args),
    ]
    with claim_devices(processes, stage):
        log.info("%s: %d data-parallel processes: %s", stage, processes, " ".join(command))
        code = subprocess.run(command, check=False).returncode
    if code:
        raise LaunchError(
            f"{processes} processes under torchrun ended with exit code {code}; the failing "
            "process' message is above"
        )


def as_argv(args: argparse.Namespace) -> list[str]:
    """``args`` back as the command line that gives them (``--name value`` options)."""
    return [
        item
        for name, value in vars(args).items()
        for item in (f"--{name.replace('_', '-')}", str(value))
    ]


def setup_worker() -> None:
    """What each process of a launch does first: die with the launcher, and let rank 0
    alone log below WARNING.

    torchrun starts each process in its own session, so a SIGKILL to the stage's process
    group (DVC's, a user's, a test's) reaches the launcher but not them: on Linux they ask
    the kernel to kill them when their parent, torchrun, dies.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the request: do as it asks
            os.kill(os.getpid(), signal.SIGKILL)
    if not is_main_process():
        logging.getLogger().setLevel(logging.WARNING)
