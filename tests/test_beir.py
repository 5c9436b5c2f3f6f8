"""BEIR reading and writing: round trips, gzip and CRLF input, and every bad input named."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
from harness import append_line as _append_line
from harness import lines as _lines
from harness import set_line as _set_line

from irtune.beir import BeirDataset, doc_text, read_beir, stats, write_beir
from irtune.errors import DataError

SPLITS = ["train", "dev", "test"]


@pytest.fixture
def beir(tiny_beir: Path, tmp_path: Path) -> Path:
    """A private, editable copy of the tiny BEIR folder."""
    return Path(shutil.copytree(tiny_beir, tmp_path / "beir"))


def _same(a: BeirDataset, b: BeirDataset) -> None:
    assert a.corpus == b.corpus
    assert a.queries == b.queries
    assert a.qrels == b.qrels


def test_tiny_dataset_reads(tiny_beir: Path) -> None:
    """The fixture reads with the shape tiny_assets documents (60 docs, 36 queries, 18/8/10)."""
    ds = read_beir(tiny_beir, SPLITS)
    assert stats(ds) == {
        "docs": 60,
        "queries": 36,
        "train_queries": 18,
        "train_qrels": 72,
        "dev_queries": 8,
        "dev_qrels": 32,
        "test_queries": 10,
        "test_qrels": 40,
    }
    assert set(ds.split_queries("test")) == set(ds.qrels["test"])


def test_write_read_round_trip(tiny_beir: Path, tmp_path: Path) -> None:
    """write_beir then read_beir gives back the same corpus, queries and graded qrels."""
    original = read_beir(tiny_beir, SPLITS)
    write_beir(original, tmp_path / "copy")
    _same(read_beir(tmp_path / "copy", SPLITS), original)


def test_round_trip_keeps_unicode_and_missing_titles(tmp_path: Path) -> None:
    """Non-ASCII text survives, and a doc written without a title reads back with ''."""
    ds = BeirDataset(
        corpus={"d1": {"title": "", "text": "Ölçüm — 日本語"}, "d2": {"title": "T", "text": "x"}},
        queries={"q1": "naïve café"},
        qrels={"test": {"q1": {"d1": 2, "d2": 0}}},
    )
    write_beir(ds, tmp_path / "u")
    _same(read_beir(tmp_path / "u", ["test"]), ds)


def test_doc_text() -> None:
    """Title and text joined by a space, stripped; without a title, the text's own string."""
    assert doc_text({"title": "T", "text": "body "}) == "T body"
    assert doc_text({"title": "", "text": " body "}) == "body"
    text = "body"
    assert doc_text({"title": "", "text": text}) is text
    assert doc_text({"text": text}) is text


def test_folded_titles_hold_each_doc_as_its_encoded_text(tiny_beir: Path) -> None:
    """fold_titles: each doc is the text it is encoded as, which doc_text returns uncopied."""
    plain = read_beir(tiny_beir, ["test"])
    folded = read_beir(tiny_beir, ["test"], fold_titles=True)
    assert folded.corpus.keys() == plain.corpus.keys()
    assert (folded.queries, folded.qrels) == (plain.queries, plain.qrels)
    for did, doc in folded.corpus.items():
        assert doc == {"title": "", "text": doc_text(plain.corpus[did])}
        assert doc_text(doc) is doc["text"]


def test_gzipped_files_read_the_same(tiny_beir: Path, beir: Path) -> None:
    """corpus/queries/qrels as .gz files read exactly like the plain ones."""
    for path in [beir / "corpus.jsonl", beir / "queries.jsonl", *(beir / "qrels").glob("*.tsv")]:
        with gzip.open(f"{path}.gz", "wb") as fh:
            fh.write(path.read_bytes())
        path.unlink()
    _same(read_beir(beir, SPLITS), read_beir(tiny_beir, SPLITS))


def test_crlf_files_read_the_same(tiny_beir: Path, beir: Path) -> None:
    """CRLF line ends (as BEIR's qrels have) change nothing."""
    for path in [beir / "queries.jsonl", *(beir / "qrels").glob("*.tsv")]:
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert b"\r\n" in (beir / "qrels" / "test.tsv").read_bytes()
    _same(read_beir(beir, SPLITS), read_beir(tiny_beir, SPLITS))


def test_qrels_without_header_read_the_same(tiny_beir: Path, beir: Path) -> None:
    """The 'query-id corpus-id score' header line is optional."""
    path = beir / "qrels" / "test.tsv"
    path.write_text("\n".join(_lines(path)[1:]) + "\n", encoding="utf-8")
    _same(read_beir(beir, SPLITS), read_beir(tiny_beir, SPLITS))


def test_numeric_ids_read_as_text(tiny_beir: Path, beir: Path) -> None:
    """Ids written as JSON numbers (``"_id": 4983``) read as the text the qrels use."""
    _append_line(beir / "corpus.jsonl", json.dumps({"_id": 4983, "text": "numeric id"}))
    path = beir / "qrels" / "test.tsv"
    qid = _lines(path)[1].split("\t")[0]
    _append_line(path, f"{qid}\t4983\t1")
    ds = read_beir(beir, SPLITS)
    assert ds.corpus["4983"] == {"title": "", "text": "numeric id"}
    assert ds.qrels["test"][qid]["4983"] == 1


def test_byte_order_marks_and_integral_float_scores_read_the_same(
    tiny_beir: Path, beir: Path
) -> None:
    """A UTF-8 byte-order mark (as some editors write) and scores written ``1.0`` change
    nothing; a header named otherwise is still a header."""
    for path in [beir / "corpus.jsonl", beir / "queries.jsonl"]:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    path = beir / "qrels" / "test.tsv"
    rows = [f"{row}.0" for row in _lines(path)[1:]]
    path.write_text("\n".join(["query_id\tdoc_id\trelevance", *rows]) + "\n")
    _same(read_beir(beir, SPLITS), read_beir(tiny_beir, SPLITS))


def test_repeated_judgements(tiny_beir: Path, beir: Path) -> None:
    """A qrels row repeated with the same score is harmless; with another score, refused."""
    path = beir / "qrels" / "dev.tsv"
    row = _lines(path)[1]
    _append_line(path, row)
    _same(read_beir(beir, SPLITS), read_beir(tiny_beir, SPLITS))
    qid, did, score = row.split("\t")
    line = _append_line(path, f"{qid}\t{did}\t{int(score) + 1}")
    assert "judges doc" in str(_expect(beir, f"{path}:{line}:"))


# --- bad input: each error names the file and (where there is one) the line ---------------


def _expect(beir: Path, where: str) -> DataError:
    with pytest.raises(DataError) as err:
        read_beir(beir, SPLITS)
    assert where in str(err.value), f"{where!r} not in {str(err.value)!r}"
    return err.value


def test_malformed_json_line(beir: Path) -> None:
    """A broken JSON line in the corpus is reported as corpus.jsonl:<line>."""
    _set_line(beir / "corpus.jsonl", 3, '{"_id": "D3", "text": ')
    _expect(beir, f"{beir / 'corpus.jsonl'}:3:")


def test_doc_without_id(beir: Path) -> None:
    """A doc with no _id is reported with its line."""
    _set_line(beir / "corpus.jsonl", 5, json.dumps({"title": "t", "text": "x"}))
    assert "_id" in str(_expect(beir, f"{beir / 'corpus.jsonl'}:5:"))


def test_doc_without_text(beir: Path) -> None:
    """A doc with no text is reported with its line and names the field."""
    _set_line(beir / "corpus.jsonl", 7, json.dumps({"_id": "D7", "title": "t"}))
    assert "text" in str(_expect(beir, f"{beir / 'corpus.jsonl'}:7:"))


def test_doc_that_is_not_an_object(beir: Path) -> None:
    """A JSON value that is not an object is reported with its line."""
    _set_line(beir / "corpus.jsonl", 2, '["D2", "text"]')
    _expect(beir, f"{beir / 'corpus.jsonl'}:2:")


def test_duplicate_doc_id(beir: Path) -> None:
    """A second doc with an id already seen is reported at the second occurrence."""
    line = _append_line(beir / "corpus.jsonl", json.dumps({"_id": "D1", "text": "again"}))
    assert "D1" in str(_expect(beir, f"{beir / 'corpus.jsonl'}:{line}:"))


def test_query_without_text(beir: Path) -> None:
    """The queries file is validated like the corpus."""
    _set_line(beir / "queries.jsonl", 4, json.dumps({"_id": "Q4", "text": 7}))
    _expect(beir, f"{beir / 'queries.jsonl'}:4:")


def test_qrels_non_numeric_score(beir: Path) -> None:
    """A qrels score that is not an integer is reported with its line."""
    path = beir / "qrels" / "dev.tsv"
    _set_line(path, 3, "Q4\tD1\thigh")
    assert "high" in str(_expect(beir, f"{path}:3:"))


@pytest.mark.parametrize("row", ["Q1\tD1", "Q1\tD1\t1\textra"])
def test_qrels_wrong_column_count(beir: Path, row: str) -> None:
    """A qrels row with 2 or 4 columns is reported with its line."""
    path = beir / "qrels" / "train.tsv"
    line = _append_line(path, row)
    _expect(beir, f"{path}:{line}:")


def test_qrels_unknown_doc(beir: Path) -> None:
    """A qrels row naming a doc the corpus lacks is reported with its line and the doc id."""
    path = beir / "qrels" / "test.tsv"
    qid = _lines(path)[1].split("\t")[0]
    line = _append_line(path, f"{qid}\tD999\t1")
    assert "D999" in str(_expect(beir, f"{path}:{line}:"))


def test_qrels_unknown_query(beir: Path) -> None:
    """A qrels row naming a query the queries file lacks is reported with its line and id."""
    path = beir / "qrels" / "train.tsv"
    line = _append_line(path, "Q999\tD1\t1")
    assert "Q999" in str(_expect(beir, f"{path}:{line}:"))


def test_split_with_no_queries(beir: Path) -> None:
    """A header-only qrels file is an error naming the file and the split."""
    path = beir / "qrels" / "dev.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n", encoding="utf-8")
    assert "dev" in str(_expect(beir, str(path)))


def test_split_judging_nothing_relevant(beir: Path) -> None:
    """A split whose every judgement is non-relevant (score 0) has nothing to score."""
    path = beir / "qrels" / "test.tsv"
    header, *rows = _lines(path)
    path.write_text("\n".join([header, *(r.rsplit("\t", 1)[0] + "\t0" for r in rows)]) + "\n")
    assert "judges no document relevant" in str(_expect(beir, str(path)))


def test_bytes_that_are_not_utf8(beir: Path) -> None:
    """A corpus line in another encoding (Latin-1 here) is named by file and line."""
    path = beir / "corpus.jsonl"
    content = path.read_bytes().split(b"\n")
    content[5] = json.dumps({"_id": "D6", "text": "caf\u00e9"}, ensure_ascii=False).encode(
        "latin-1"
    )
    path.write_bytes(b"\n".join(content))
    assert "not UTF-8 text" in str(_expect(beir, f"{path}:6:"))


@pytest.mark.parametrize("damage", ["truncated", "not-gzip"])
def test_damaged_gzip_file(beir: Path, damage: str) -> None:
    """A gzip file cut short, or one that is no gzip at all, is named, not a traceback."""
    path = beir / "corpus.jsonl"
    packed = gzip.compress(path.read_bytes())
    gz = beir / "corpus.jsonl.gz"
    gz.write_bytes(packed[: len(packed) // 2] if damage == "truncated" else path.read_bytes())
    path.unlink()
    assert "damaged gzip file" in str(_expect(beir, str(gz)))


def test_missing_split_file(beir: Path) -> None:
    """Asking for a split without a qrels file names the missing file."""
    with pytest.raises(DataError, match=r"validation\.tsv"):
        read_beir(beir, ["validation"])


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_corpus(beir: Path, content: str) -> None:
    """A corpus with no documents (empty or blank lines only) is an error naming the file."""
    (beir / "corpus.jsonl").write_text(content, encoding="utf-8")
    assert "empty" in str(_expect(beir, str(beir / "corpus.jsonl")))


def test_missing_dir(tmp_path: Path) -> None:
    """A dataset folder that does not exist is an error naming it."""
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        read_beir(missing, SPLITS)


def test_dir_without_corpus(beir: Path) -> None:
    """A folder lacking corpus.jsonl (and .gz) is an error naming the folder and the file."""
    (beir / "corpus.jsonl").unlink()
    assert "corpus.jsonl" in str(_expect(beir, str(beir)))
