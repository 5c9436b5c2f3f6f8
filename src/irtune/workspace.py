"""Throwaway DVC workspaces and the commands run in them.

The end-to-end tests, the orchestration benchmark and ``make sweep`` all run DVC (and other
commands) as a user would, in a real repository: a copy of this checkout with its own git
history and none of the pipeline products of whoever ran the pipeline here. This module is
the one place that knows how to make such a copy and how to run a command in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Untracked paths that are pipeline *products* (another config, another dataset), not
#: uncommitted source work: never copied into a throwaway workspace.
GENERATED = ("dvc.lock", "params.yaml", "metrics/", "plots/", "data/", "mlflow.db", "reports/")

#: Variables that tie a process to a DVC stage or experiment, or to a tracking store: a
#: throwaway workspace must not inherit them from whoever runs it.
CONTEXT_VARIABLES = ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")

#: Hugging Face offline, and no tokenizer threads across forks (DataLoader workers).
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DVC_NO_ANALYTICS": "1",
}


def git_files(repo: Path, *args: str) -> list[str]:
    """Paths that ``git ls-files`` lists in ``repo`` with extra ``args``, e.g. ``--others``."""
    out = subprocess.run(
        ["git", "ls-files", "-z", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    return [p for p in out.split("\0") if p]


def copy_checkout(repo: Path, dest: Path, skip: tuple[str, ...] = GENERATED) -> None:
    """Copy ``repo``'s tracked files and untracked-but-not-ignored ones into ``dest``.

    Untracked files are uncommitted work, so they come along; ignored files (virtual
    environments, caches) do not. Symlinks are copied as links.

    Args:
        repo: The checkout.
        dest: Where the copy goes (created as needed).
        skip: Path prefixes of untracked files to leave out: pipeline products.
    """
    untracked = [
        p for p in git_files(repo, "--others", "--exclude-standard") if not p.startswith(skip)
    ]
    for rel in [*git_files(repo), *untracked]:
        src = repo / rel
        if not src.exists() and not src.is_symlink():  # deleted but still in the index
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)


def clean_env(python_bin: Path, **extra: str) -> dict[str, str]:
    """This process's environment, offline, with ``python_bin`` first on ``PATH`` and no
    DVC stage, experiment or tracking-store context.

    DVC runs every stage with the ``python`` it finds on ``PATH``: ``python_bin`` makes that
    the environment irtune is installed in.
    """
    env = {k: v for k, v in os.environ.items() if k not in CONTEXT_VARIABLES}
    env |= OFFLINE | {"PATH": f"{python_bin}{os.pathsep}{env.get('PATH', '')}"}
    return env | extra


@dataclass
class Result:
    """A finished command: its exit status and everything it printed, interleaved."""

    returncode: int
    output: str


def run_captured(
    cmd: Sequence[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Result:
    """Run ``cmd`` with stdout and stderr captured together, through a file.

    A file, not a pipe: ``dvc queue start`` forks workers that inherit its stdout, and
    reading a pipe would wait for the last of them to exit.
    """
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as out:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        out.seek(0)
        return Result(proc.returncode, out.read())


def init_git(root: Path, env: Mapping[str, str] | None = None, author: str = "irtune") -> None:
    """``git init`` in ``root``, with a local identity and unsigned commits.

    Raises:
        RuntimeError: If a git command fails.
    """
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", author],
        ["git", "config", "user.email", f"{author.replace(' ', '-')}@irtune.invalid"],
        ["git", "config", "commit.gpgsign", "false"],
    ):
        result = run_captured(cmd, cwd=root, env=env, timeout=60)
        if result.returncode:
            raise RuntimeError(f"`{' '.join(cmd)}` failed in {root}:\n{result.output}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (one of another user's counts)."""
    if pid <= 0:
        return False  # 0 and negative ids name process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
