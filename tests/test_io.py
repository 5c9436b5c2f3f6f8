"""File helpers: atomic outputs, JSON and TREC run files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from irtune.errors import DataError
from irtune.io import atomic_path, read_json, write_json
from irtune.runs import read_trec_run, write_trec_run


class Boom(Exception):
    """Raised inside atomic_path to simulate a stage failing half-way."""


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_atomic_file_success_replaces(tmp_path: Path) -> None:
    """A file written through atomic_path replaces the old target and leaves no temporaries."""
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with atomic_path(target) as tmp:
        assert tmp != target
        assert tmp.parent.parent == target.parent  # a sibling: same filesystem
        tmp.write_text("new", encoding="utf-8")
        assert target.read_text(encoding="utf-8") == "old"  # not visible until success
    assert target.read_text(encoding="utf-8") == "new"
    assert _siblings(target) == ["out.txt"]


def test_atomic_file_creates_missing_parents(tmp_path: Path) -> None:
    """The target's folder is created when it does not exist yet."""
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("x", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "x"


def test_atomic_file_failure_keeps_old(tmp_path: Path) -> None:
    """An exception inside leaves the previous file intact and no temp siblings."""
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise Boom
    assert target.read_text(encoding="utf-8") == "old"
    assert _siblings(target) == ["out.txt"]


def test_atomic_failure_without_previous_leaves_nothing(tmp_path: Path) -> None:
    """A failed first write leaves no target at all, not a half one."""
    target = tmp_path / "out.txt"
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_atomic_nothing_written_is_an_error(tmp_path: Path) -> None:
    """Leaving the yielded path unwritten raises instead of silently producing nothing."""
    target = tmp_path / "out.txt"
    with pytest.raises(FileNotFoundError), atomic_path(target):
        pass
    assert list(tmp_path.iterdir()) == []


def _write_folder(path: Path, files: dict[str, str]) -> None:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text, encoding="utf-8")


def _read_folder(path: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in path.iterdir()}


def test_atomic_folder_success_replaces(tmp_path: Path) -> None:
    """A folder written through atomic_path replaces the old one whole: stale files go."""
    target = tmp_path / "model"
    _write_folder(target, {"a.bin": "old-a", "stale.txt": "old"})
    with atomic_path(target) as tmp:
        _write_folder(tmp, {"a.bin": "new-a", "b.bin": "new-b"})
    assert _read_folder(target) == {"a.bin": "new-a", "b.bin": "new-b"}
    assert _siblings(target) == ["model"]


def test_atomic_folder_failure_keeps_old(tmp_path: Path) -> None:
    """An exception inside leaves the previous folder intact and no temp siblings."""
    target = tmp_path / "model"
    _write_folder(target, {"a.bin": "old-a"})
    with pytest.raises(Boom), atomic_path(target) as tmp:
        _write_folder(tmp, {"a.bin": "half"})
        raise Boom
    assert _read_folder(target) == {"a.bin": "old-a"}
    assert _siblings(target) == ["model"]


def test_json_round_trip(tmp_path: Path) -> None:
    """write_json/read_json round-trip nested data."""
    obj = {"b": [1, 2.5, None], "a": {"x": "ü"}}
    write_json(tmp_path / "m.json", obj)
    assert read_json(tmp_path / "m.json") == obj


def test_read_json_errors_name_the_file(tmp_path: Path) -> None:
    """A malformed or missing JSON file is a DataError naming the file (and line)."""
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  oops\n}\n', encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:3:")):
        read_json(path)
    with pytest.raises(DataError, match=r"missing\.json"):
        read_json(tmp_path / "missing.json")


def test_trec_run_round_trip(tmp_path: Path) -> None:
    """A run written as TREC reads back with the same docs and (6-decimal) scores."""
    run = {
        "q2": {"d1": 0.5, "d2": 0.25, "d3": -1.0},
        "q1": {"d9": 3.1415926, "d8": 2.0},
    }
    path = tmp_path / "run.trec"
    write_trec_run(path, run, tag="test")
    back = read_trec_run(path)
    assert back.keys() == run.keys()
    for qid, docs in run.items():
        assert back[qid].keys() == docs.keys()
        for did, score in docs.items():
            assert back[qid][did] == pytest.approx(score, abs=1e-6)


def test_trec_run_lines_are_ranked_best_first(tmp_path: Path) -> None:
    """Each line is 'qid Q0 docid rank score tag' with ranks 1.. in descending score order."""
    path = tmp_path / "run.trec"
    write_trec_run(path, {"q": {"a": 0.1, "b": 0.9, "c": 0.5}}, tag="t")
    rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in rows] == [
        ("q", "Q0", "b", "1", "t"),
        ("q", "Q0", "c", "2", "t"),
        ("q", "Q0", "a", "3", "t"),
    ]


@pytest.mark.parametrize(
    "bad", ["q1 Q0 d3 3 0.1", "q1 Q0 d3 3 high tag", "q1 Q0 d3 3 0.1 tag extra"]
)
def test_malformed_trec_line_names_file_and_line(tmp_path: Path, bad: str) -> None:
    """A line with the wrong column count or a non-numeric score is reported as file:line."""
    path = tmp_path / "run.trec"
    path.write_text(f"q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 0.5 t\n\n{bad}\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:4:")):
        read_trec_run(path)


def test_missing_trec_run(tmp_path: Path) -> None:
    """A missing run file is a DataError naming it."""
    with pytest.raises(DataError, match=r"none\.trec"):
        read_trec_run(tmp_path / "none.trec")
