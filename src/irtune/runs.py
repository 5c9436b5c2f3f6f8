"""Runs: what every retrieval step hands the next, and how they are ordered, cut and stored.

A run maps each query id to the scores of its retrieved documents. Everything that needs a
ranking out of one (writing a TREC file, cutting to the top k, reciprocal rank fusion,
feedback documents, MRR) goes through :func:`ranked`, so the order is the same everywhere:
best score first, ties broken by doc id. Runs are stored as TREC run files; a Faiss index or
an embeddings matrix stores its row order in a doc-id sidecar (``doc_ids.txt``).
"""

from __future__ import annotations

from pathlib import Path

from irtune.errors import DataError
from irtune.io import atomic_path, open_text

#: A run: query id -> doc id -> score.
Run = dict[str, dict[str, float]]

#: The doc-id sidecar of an embeddings matrix or an index: one id per row, in row order.
DOC_IDS = "doc_ids.txt"


def ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    """One query's ``(doc id, score)`` pairs, best first; equal scores in doc-id order."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def best(scores: dict[str, float], k: int) -> dict[str, float]:
    """One query's ``k`` best documents (:func:`ranked` order)."""
    return dict(ranked(scores)[:k])


def cut(run: Run, k: int) -> Run:
    """Every query's ``k`` best documents."""
    return {qid: best(docs, k) for qid, docs in run.items()}


def subset(run: Run, qids) -> Run:
    """The rankings of ``qids`` (any iterable of query ids); empty for a query ``run`` lacks."""
    return {qid: run.get(qid, {}) for qid in qids}


def write_trec_run(path: str | Path, run: Run, tag: str) -> None:
    """Write a run as a TREC run file (``qid Q0 docid rank score tag``), best first, atomically.

    Args:
        path: Output file.
        run: Scores per query.
        tag: The run tag (last column).
    """
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for qid in sorted(run):
            for rank, (docid, score) in enumerate(ranked(run[qid]), start=1):
                fh.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run file.

    Raises:
        DataError: On a missing file, or a line that is not ``qid Q0 docid rank score tag``;
            names the file and line.
    """
    path = Path(path)
    run: Run = {}
    with open_text(path) as fh:
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


def write_doc_ids(path: Path, doc_ids: list[str]) -> None:
    """Write a doc-id sidecar: one id a line, in row order."""
    path.write_text("".join(f"{did}\n" for did in doc_ids), encoding="utf-8")


def read_doc_ids(path: Path) -> list[str]:
    """Read a doc-id sidecar.

    Raises:
        DataError: If the file is missing.
    """
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
