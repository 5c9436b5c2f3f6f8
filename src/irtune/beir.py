"""BEIR's data contract: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

Readers accept plain or gzipped files (``corpus.jsonl.gz``) and validate as they go: every
problem is reported as ``file:line: what is wrong``.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
    """The text a document is encoded as: ``title + " " + text``, as BEIR and MTEB do.

    Without a title it is the text, stripped: the text's own string when it has no
    surrounding whitespace (as :func:`read_corpus` with ``fold_titles`` leaves every
    document), not a copy.
    """
    title = doc.get("title", "")
    return f"{title} {doc['text']}".strip() if title else doc["text"].strip()


def find_file(root: Path, name: str) -> Path:
    """Find ``name`` or ``name.gz`` under ``root``.

    Raises:
        DataError: If neither exists.
    """
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root}: not a BEIR directory: missing {name} (or {name}.gz)")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line without its line end)`` of a text file, plain or gzipped, UTF-8
    with or without a byte-order mark, LF or CRLF line ends (BEIR's qrels end in CRLF).

    Raises:
        DataError: On bytes that are not UTF-8 (naming the line), or a damaged gzip file.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            # Decoded line by line, so an encoding error is reported at its own line.
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{path}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#x} at "
                        f"column {exc.start + 1})"
                    ) from None
                yield lineno, (line.removeprefix("\ufeff") if lineno == 1 else line).rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: damaged gzip file ({exc or type(exc).__name__})") from None


def _read_jsonl(path: Path, id_key: str, fields: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    seen: set[str] = set()
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            # Some of json's messages end in "at", before the position str(exc) adds.
            what = exc.msg.removesuffix(" at")
            raise DataError(
                f"{path}:{lineno}: malformed JSON: {what} at column {exc.colno}"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object")
        oid = obj.get(id_key)
        if isinstance(oid, int) and not isinstance(oid, bool):
            oid = str(oid)  # numeric ids, as some exports write them; qrels name them as text
        if not isinstance(oid, str) or not oid:
            raise DataError(f"{path}:{lineno}: missing or empty '{id_key}' (got {oid!r})")
        for key in fields:
            if not isinstance(obj.get(key), str):
                raise DataError(f"{path}:{lineno}: '{oid}' has no string '{key}'")
        if oid in seen:
            raise DataError(f"{path}:{lineno}: duplicate id '{oid}'")
        seen.add(oid)
        yield oid, obj


def read_corpus(path: Path, fold_titles: bool = False) -> Corpus:
    """Read a BEIR corpus file; every doc needs ``_id`` and ``text`` (``title`` optional).

    Args:
        path: The corpus file.
        fold_titles: Hold each document as the text it is encoded as, its title folded in
            (``{"title": "", "text": doc_text(doc)}``): for a reader that needs nothing else,
            whose texts (:func:`doc_text`) are then the corpus' own strings, not copies.
    """
    corpus = {}
    for did, obj in _read_jsonl(path, "_id", ("text",)):
        title = obj.get("title")
        doc = {"title": title if isinstance(title, str) else "", "text": obj["text"]}
        corpus[did] = {"title": "", "text": doc_text(doc)} if fold_titles else doc
    if not corpus:
        raise DataError(f"{path}: the corpus is empty")
    return corpus


def read_queries(path: Path) -> Queries:
    """Read a BEIR queries file; every query needs ``_id`` and ``text``."""
    return {qid: obj["text"] for qid, obj in _read_jsonl(path, "_id", ("text",))}


def read_qrels(path: Path, queries: Queries | None = None, corpus: Corpus | None = None) -> Qrels:
    """Read a BEIR qrels file: ``query-id  corpus-id  score``, tab-separated, with an optional
    header line.

    Scores are graded relevance: any integer (``2.0`` is read as 2); 0 or below is a judged
    non-relevant document, never a positive. If ``queries`` or ``corpus`` is given, every row
    must name a query or doc held there. A row repeating a (query, doc) pair with another
    score is refused.
    """
    qrels: Qrels = {}
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) != 3:
            raise DataError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(row)}")
        qid, did, score = (cell.strip() for cell in row)
        grade = _grade(score)
        if grade is None:
            if lineno == 1:  # a header: "query-id  corpus-id  score" or the like
                continue
            raise DataError(f"{path}:{lineno}: score {score!r} is not an integer")
        if queries is not None and qid not in queries:
            raise DataError(f"{path}:{lineno}: query '{qid}' is not in the queries file")
        if corpus is not None and did not in corpus:
            raise DataError(f"{path}:{lineno}: doc '{did}' (query '{qid}') is not in corpus")
        judged = qrels.setdefault(qid, {})
        if judged.get(did, grade) != grade:
            raise DataError(
                f"{path}:{lineno}: query '{qid}' judges doc '{did}' again, {grade} after "
                f"{judged[did]}"
            )
        judged[did] = grade
    return qrels


def _grade(score: str) -> int | None:
    """An integer relevance grade from ``"2"`` or ``"2.0"``; None for anything else."""
    try:
        value = float(score)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def read_beir(root: str | Path, splits: list[str], fold_titles: bool = False) -> BeirDataset:
    """Read and cross-check a BEIR directory.

    Args:
        root: Folder with corpus, queries and ``qrels/<split>.tsv`` (each maybe gzipped).
        splits: The qrels splits to read; each must exist and judge at least one query.
        fold_titles: Hold each document as the one text it is encoded as (:func:`read_corpus`).

    Returns:
        The dataset.

    Raises:
        DataError: On a malformed file, or qrels naming unknown docs or queries.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory does not exist")
    corpus = read_corpus(find_file(root, "corpus.jsonl"), fold_titles)
    queries = read_queries(find_file(root, "queries.jsonl"))
    qrels: dict[str, Qrels] = {}
    for split in splits:
        path = find_file(root / "qrels", f"{split}.tsv")
        split_qrels = read_qrels(path, queries, corpus)
        if not split_qrels:
            raise DataError(f"{path}: split '{split}' has no queries")
        if not any(g > 0 for docs in split_qrels.values() for g in docs.values()):
            raise DataError(f"{path}: split '{split}' judges no document relevant (score > 0)")
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


def carve_dev(
    dataset: BeirDataset, train: str, dev: str, fraction: float, seed: int
) -> tuple[BeirDataset, dict[str, Any]]:
    """Move a seeded ``fraction`` of the ``train`` split's queries, with all their judgements,
    into a new split ``dev``: for a dataset that ships none (SciFact and most of BEIR).

    Only queries with a relevant document can be carved (a dev query must be scorable); the
    rest stay in train. The carved queries leave the train split, so no model trains on
    them, and test is untouched.

    Returns:
        The dataset with the two splits, and a record of the carve-out: the seed, the
        fraction, the counts and the carved query ids.

    Raises:
        DataError: If the train split has too few queries to carve from.
    """
    qrels = dataset.qrels[train]
    scorable = [q for q, docs in qrels.items() if any(g > 0 for g in docs.values())]
    count = round(len(scorable) * fraction)
    if not 0 < count < len(scorable):
        raise DataError(
            f"split '{train}': cannot carve {fraction:g} of its {len(scorable)} queries with a "
            "relevant document into a dev split: set dataset.dev_fraction, or name a dev split"
        )
    carved = set(random.Random(seed).sample(scorable, count))
    splits = {name: judged for name, judged in dataset.qrels.items() if name != train}
    splits[train] = {q: docs for q, docs in qrels.items() if q not in carved}
    splits[dev] = {q: docs for q, docs in qrels.items() if q in carved}  # in train's order
    record = {
        "from_split": train,
        "fraction": fraction,
        "seed": seed,
        "queries": count,
        "qrels": sum(len(docs) for docs in splits[dev].values()),
        "query_ids": list(splits[dev]),
    }
    return replace(dataset, qrels=splits), record
