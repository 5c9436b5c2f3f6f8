"""Small file helpers shared by the stages: atomic outputs, JSON and JSON lines.

Every stage writes through :func:`atomic_path`, so a killed or failing stage never leaves a
plausible-looking half artifact behind: outputs appear whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from irtune.errors import DataError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; move it onto ``target`` only on success.

    Works for files and folders alike: the caller writes a file or creates a folder at the
    yielded path. On an exception the temporary is removed, ``target`` is left as it was, and
    so is its folder: one this call had to create is removed again.

    Args:
        target: The final output path.

    Yields:
        A path in the same folder (same filesystem, so the final rename is atomic).
    """
    target = Path(target)
    # The folders this call creates, deepest first: removed again if the write fails.
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    done = False
    try:
        try:
            yield staged
        except OSError as exc:
            # A failed write (disk full, file too large) names no file, or the temporary:
            # name the output instead, so the stage's one error message says where.
            if exc.filename is None or str(exc.filename).startswith(str(tmp)):
                raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
            raise
        if not staged.exists():
            raise FileNotFoundError(f"nothing was written to {target}")
        if target.is_dir() and not target.is_symlink():
            # A folder cannot be renamed over a non-empty one: move the old one aside first.
            old = tmp / f"{target.name}.old"
            target.rename(old)
            try:
                staged.rename(target)
            except OSError:
                old.rename(target)  # put the previous output back before failing
                raise
        else:
            os.replace(staged, target)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if still empty


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as stable, indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file (and line) if it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None


def open_text(path: Path) -> TextIO:
    """Open a UTF-8 text file for reading.

    Raises:
        DataError: If the file does not exist, naming it.
    """
    try:
        return path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON lines, one object a line, atomically."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read JSON lines, naming the file and line of one that is not a JSON object."""
    path = Path(path)
    rows = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            rows.append(row)
    return rows
