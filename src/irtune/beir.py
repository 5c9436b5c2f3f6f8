"""BEIR's data contract: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

Readers accept plain or gzipped files (``corpus.jsonl.gz``) and validate as they go: every
problem is reported as ``file:line: what is wrong``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from irtune.errors import DataError

#: doc id -> {"title": ..., "text": ...}
Corpus = dict[str, dict[str, str]]
#: query id -> text
Queries = dict[str, str]
#: query id -> doc id -> graded relevance
Qrels = dict[str, dict[str, int]]


@dataclass
class BeirDataset:
    """A BEIR dataset held in memory."""

    corpus: Corpus
    queries: Queries
    qrels: dict[str, Qrels]
    #: The folder it was read from, for messages; None when built in memory.
    root: Path | None = None

    def split_queries(self, split: str) -> Queries:
        """The queries judged in ``split``, in qrels order."""
        return {qid: self.queries[qid] for qid in self.qrels[split]}


def doc_text(doc: dict[str, str]) -> str:
    """The text a document is encoded as: ``title + " " + text``, as BEIR and MTEB do."""
    return f"{doc.get('title', '')} {doc['text']}".strip()


def find_file(root: Path, name: str) -> Path:
    """Find ``name`` or ``name.gz`` under ``root``.

    Raises:
        DataError: If neither exists.
    """
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root}: not a BEIR directory: missing {name} (or {name}.gz)")


def _open(path: Path) -> io.TextIOBase:
    # Universal newlines: BEIR's qrels end their lines with CRLF.
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline=None)
    return path.open(encoding="utf-8", newline=None)


def _read_jsonl(path: Path, id_key: str, fields: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    seen: set[str] = set()
    with _open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.rstrip("\n"))
            except json.JSONDecodeError as exc:
                # Some of json's messages end in "at", before the position str(exc) adds.
                what = exc.msg.removesuffix(" at")
                raise DataError(
                    f"{path}:{lineno}: malformed JSON: {what} at column {exc.colno}"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            oid = obj.get(id_key)
            if not isinstance(oid, str) or not oid:
                raise DataError(f"{path}:{lineno}: missing or empty '{id_key}'")
            for key in fields:
                if not isinstance(obj.get(key), str):
                    raise DataError(f"{path}:{lineno}: '{oid}' has no string '{key}'")
            if oid in seen:
                raise DataError(f"{path}:{lineno}: duplicate id '{oid}'")
            seen.add(oid)
            yield oid, obj


def read_corpus(path: Path) -> Corpus:
    """Read a BEIR corpus file; every doc needs ``_id`` and ``text`` (``title`` optional)."""
    corpus = {
        did: {"title": obj.get("title") or "", "text": obj["text"]}
        for did, obj in _read_jsonl(path, "_id", ("text",))
    }
    if not corpus:
        raise DataError(f"{path}: the corpus is empty")
    return corpus


def read_queries(path: Path) -> Queries:
    """Read a BEIR queries file; every query needs ``_id`` and ``text``."""
    return {qid: obj["text"] for qid, obj in _read_jsonl(path, "_id", ("text",))}


def read_qrels(path: Path, queries: Queries | None = None, corpus: Corpus | None = None) -> Qrels:
    """Read a BEIR qrels file (``query-id  corpus-id  score``, optional header line).

    If ``queries`` or ``corpus`` is given, every row must name a query or doc held there.
    """
    qrels: Qrels = {}
    with _open(path) as fh:
        # QUOTE_NONE: an id may contain a '"'; BEIR's qrels are plain tab-separated text.
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        for lineno, row in enumerate(rows, start=1):
            if not row:
                continue
            if lineno == 1 and row[0] == "query-id":
                continue
            if len(row) != 3:
                raise DataError(
                    f"{path}:{lineno}: expected 3 tab-separated columns, got {len(row)}"
                )
            qid, did, score = row
            if queries is not None and qid not in queries:
                raise DataError(f"{path}:{lineno}: query '{qid}' is not in the queries file")
            if corpus is not None and did not in corpus:
                raise DataError(f"{path}:{lineno}: doc '{did}' (query '{qid}') is not in corpus")
            try:
                qrels.setdefault(qid, {})[did] = int(score)
            except ValueError:
                raise DataError(f"{path}:{lineno}: score {score!r} is not an integer") from None
    return qrels


def read_beir(root: str | Path, splits: list[str]) -> BeirDataset:
    """Read and cross-check a BEIR directory.

    Args:
        root: Folder with corpus, queries and ``qrels/<split>.tsv`` (each maybe gzipped).
        splits: The qrels splits to read; each must exist and judge at least one query.

    Returns:
        The dataset.

    Raises:
        DataError: On a malformed file, or qrels naming unknown docs or queries.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory does not exist")
    corpus = read_corpus(find_file(root, "corpus.jsonl"))
    queries = read_queries(find_file(root, "queries.jsonl"))
    qrels: dict[str, Qrels] = {}
    for split in splits:
        path = find_file(root / "qrels", f"{split}.tsv")
        split_qrels = read_qrels(path, queries, corpus)
        if not split_qrels:
            raise DataError(f"{path}: split '{split}' has no queries")
        qrels[split] = split_qrels
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, root=root)


def write_beir(dataset: BeirDataset, root: Path) -> None:
    """Write ``dataset`` in plain BEIR layout under ``root`` (which must not exist yet)."""
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for did, doc in dataset.corpus.items():
            fh.write(json.dumps({"_id": did, "title": doc["title"], "text": doc["text"]}) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text in dataset.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, qrels in dataset.qrels.items():
        with (root / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in qrels.items():
                for did, score in docs.items():
                    fh.write(f"{qid}\t{did}\t{score}\n")


def stats(dataset: BeirDataset) -> dict[str, int]:
    """Counts worth recording: docs, queries, and queries/qrels per split."""
    out = {"docs": len(dataset.corpus), "queries": len(dataset.queries)}
    for split, qrels in dataset.qrels.items():
        out[f"{split}_queries"] = len(qrels)
        out[f"{split}_qrels"] = sum(len(d) for d in qrels.values())
    return out
