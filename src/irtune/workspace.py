"""A throwaway copy of a git checkout, for running DVC in without touching the original.

The end-to-end tests and the orchestration benchmark both need one: a real DVC workspace
holding this project's code and config (including uncommitted work), but none of its
pipeline products.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def git_files(repo: Path, *args: str) -> list[str]:
    """Paths that ``git ls-files`` lists in ``repo`` with extra ``args``, e.g. ``--others``."""
    out = subprocess.run(
        ["git", "ls-files", "-z", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    return [p for p in out.split("\0") if p]


def copy_checkout(repo: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy ``repo``'s tracked files and untracked-but-not-ignored ones into ``dest``.

    Untracked files are uncommitted work, so they come along; ignored files (virtual
    environments, caches) do not. Symlinks are copied as links.

    Args:
        repo: The checkout.
        dest: Where the copy goes (created as needed).
        skip: Path prefixes of untracked files to leave out, e.g. pipeline products.
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
