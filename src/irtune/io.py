"""Small file helpers shared by the stages: atomic outputs, JSON, TREC run files.

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
from typing import Any

from irtune.errors import DataError

#: A run: query id -> doc id -> score.
Run = dict[str, dict[str, float]]


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


def write_trec_run(path: str | Path, run: Run, tag: str) -> None:
    """Write a run as a TREC run file (``qid Q0 docid rank score tag``), best first.

    Args:
        path: Output file.
        run: Scores per query.
        tag: The run tag (last column).
    """
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (docid, score) in enumerate(ranked, start=1):
                fh.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run file.

    Raises:
        DataError: On a line that is not ``qid Q0 docid rank score tag``; names file and line.
    """
    path = Path(path)
    run: Run = {}
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(f"{path}:{lineno}: expected 6 columns, got {len(parts)}")
            qid, _, docid, _, score, _ = parts
            try:
                run.setdefault(qid, {})[docid] = float(score)
            except ValueError:
                raise DataError(f"{path}:{lineno}: score {score!r} is not a number") from None
    return run


def _open_text(path: Path):
    try:
        return path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
