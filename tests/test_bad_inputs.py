"""The user-facing contract of a stage given bad input, one case per kind of bad input.

Every case runs a real stage script in-process (dvc.yaml's own command line, through
``irtune.stage.run_stage``) in a throwaway workspace and proves that the stage

- exits with status 1,
- logs exactly one ERROR, on one line, naming the file and line (or the config key) and
  what is wrong,
- leaves the workspace exactly as it found it: no new output, no temporary, no empty
  folder; and, in the ``previous`` variant, the outputs of an earlier successful run stay
  intact byte for byte.

The library-level checks of the same inputs live in test_beir.py; these are the stage-level
ones. The last tests cover ``retrieve.top_k`` larger than the corpus, which is not an error:
it is clamped with a warning.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import resource
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from harness import StageWorkspace, declared_outputs, tiny_params
from harness import append_line as _append_line
from harness import lines as _lines
from harness import set_line as _set_line

from irtune.beir import read_beir
from irtune.runs import read_trec_run

#: Weight files a saved model folder holds; a folder without them cannot be loaded.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


class Workspace(StageWorkspace):
    """A throwaway pipeline workspace (the cwd of the stage) plus helpers to build inputs."""

    def __init__(self, tmp_path: Path, assets: dict[str, Path]) -> None:
        params = tiny_params(assets, rerank={"top_k": 5}, tracking={"enabled": False})
        super().__init__(tmp_path / "ws", params, assets)
        self.tmp = tmp_path

    def source(self) -> Path:
        """An editable copy of the tiny dataset outside the workspace, as dataset.source."""
        src = Path(shutil.copytree(self.assets["beir"], self.tmp / "source"))
        self.params["dataset"]["source"] = str(src)
        return src

    def without_weights(self, asset: str) -> Path:
        """A copy of a tiny model folder with its weight files removed."""
        folder = Path(shutil.copytree(self.assets[asset], self.tmp / f"{asset}-no-weights"))
        removed = [p for pattern in WEIGHT_FILES for p in folder.rglob(pattern)]
        assert removed, f"no weight file found in {folder}"
        for path in removed:
            path.unlink()
        return folder


def _truncate(path: Path) -> None:
    """Cut a file to half its size, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Make any write past ``limit`` bytes of a file fail with EFBIG, as a full disk would.

    RLIMIT_FSIZE binds root too (unlike file permissions). SIGXFSZ is ignored meanwhile so
    the write fails with an OSError instead of killing the test process.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


# --- the cases ---------------------------------------------------------------------------
# Each setup builds the bad input in the workspace and returns the fragments the one error
# message must hold: where (file:line, file, or config key) and what is wrong.


Setup = Callable[[Workspace], tuple[str, str]]


@dataclass(frozen=True)
class Bad:
    id: str
    stage: str
    setup: Setup
    #: A context the stage runs in (for failures that only happen while writing).
    during: Callable[[], contextlib.AbstractContextManager] = field(default=contextlib.nullcontext)


def _corpus_malformed_json(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "corpus.jsonl"
    _set_line(path, 4, '{"_id": "D4", "text": "unterminated')
    return f"{path}:4:", "malformed JSON: Unterminated string starting at column 23"


def _queries_malformed_json(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "queries.jsonl"
    _set_line(path, 2, '{"_id": "Q2", ')
    return f"{path}:2:", "malformed JSON: Expecting property name enclosed in double quotes"


def _doc_without_id(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "corpus.jsonl"
    _set_line(path, 5, json.dumps({"title": "t", "text": "no id"}))
    return f"{path}:5:", "missing or empty '_id'"


def _doc_without_text(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "corpus.jsonl"
    _set_line(path, 7, json.dumps({"_id": "D7", "title": "no text"}))
    return f"{path}:7:", "'D7' has no string 'text'"


def _duplicate_doc_id(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "corpus.jsonl"
    line = _append_line(path, json.dumps({"_id": "D1", "text": "again"}))
    return f"{path}:{line}:", "duplicate id 'D1'"


def _qrels_non_numeric_score(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "qrels" / "dev.tsv"
    qid, did, _ = _lines(path)[2].split("\t")
    _set_line(path, 3, f"{qid}\t{did}\thigh")
    return f"{path}:3:", "score 'high' is not an integer"


def _qrels_wrong_column_count(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "qrels" / "train.tsv"
    line = _append_line(path, "Q1\tD1")
    return f"{path}:{line}:", "expected 3 tab-separated columns, got 2"


def _qrels_unknown_doc(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "qrels" / "test.tsv"
    qid = _lines(path)[1].split("\t")[0]
    line = _append_line(path, f"{qid}\tD999\t1")
    return f"{path}:{line}:", "doc 'D999'"


def _qrels_unknown_query(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "qrels" / "train.tsv"
    line = _append_line(path, "Q999\tD1\t1")
    return f"{path}:{line}:", "query 'Q999' is not in the queries file"


def _split_without_queries(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "qrels" / "dev.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n", encoding="utf-8")
    return f"{path}:", "split 'dev' has no queries"


def _empty_corpus(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "corpus.jsonl"
    path.write_text("", encoding="utf-8")
    return f"{path}:", "the corpus is empty"


def _source_missing(ws: Workspace) -> tuple[str, str]:
    missing = ws.tmp / "no-such-dataset"
    ws.params["dataset"]["source"] = str(missing)
    return f"{missing}:", "dataset directory does not exist"


def _source_not_beir(ws: Workspace) -> tuple[str, str]:
    folder = ws.tmp / "not-beir"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a dataset\n", encoding="utf-8")
    ws.params["dataset"]["source"] = str(folder)
    return f"{folder}:", "not a BEIR directory: missing corpus.jsonl"


def _corpus_not_utf8(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "corpus.jsonl"
    content = path.read_bytes().split(b"\n")
    content[8] = b'{"_id": "D9", "text": "caf\xe9 au lait"}'  # Latin-1, not UTF-8
    path.write_bytes(b"\n".join(content))
    return f"{path}:9:", "not UTF-8 text (byte 0xe9 at column 27)"


def _corpus_gzip_truncated(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "corpus.jsonl"
    packed = gzip.compress(path.read_bytes())
    gz = path.with_name("corpus.jsonl.gz")
    gz.write_bytes(packed[: len(packed) // 2])
    path.unlink()
    return f"{gz}:", "damaged gzip file"


def _qrels_conflicting_judgements(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "qrels" / "test.tsv"
    qid, did, _ = _lines(path)[1].split("\t")
    line = _append_line(path, f"{qid}\t{did}\t0")
    return f"{path}:{line}:", f"query '{qid}' judges doc '{did}' again, 0 after"


def _split_judging_nothing_relevant(ws: Workspace) -> tuple[str, str]:
    path = ws.source() / "qrels" / "test.tsv"
    header, *rows = _lines(path)
    path.write_text("\n".join([header, *(r.rsplit("\t", 1)[0] + "\t0" for r in rows)]) + "\n")
    return f"{path}:", "split 'test' judges no document relevant (score > 0)"


def _param(section: str, key: str, value: Any, where: str, what: str) -> Setup:
    """A setup that gives one param a value that cannot make sense."""

    def setup(ws: Workspace) -> tuple[str, str]:
        ws.params[section][key] = value
        return where, what

    return setup


def _mixed_precision_without_cuda(ws: Workspace) -> tuple[str, str]:
    ws.raw()
    ws.rows()
    ws.params["train"]["precision"] = "bf16"
    return "'train.precision' is 'bf16'", "this machine has none: set train.precision=fp32"


def _mixed_precision_without_cuda_ddp(ws: Workspace) -> tuple[str, str]:
    ws.params["train"]["devices"] = 2
    return _mixed_precision_without_cuda(ws)


def _bi_encoder_without_weights(ws: Workspace) -> tuple[str, str]:
    ws.raw()
    ws.rows()
    folder = ws.without_weights("bi_encoder")
    ws.params["model"]["base"] = str(folder)
    return f"'{folder}'", "cannot load bi-encoder"


def _cross_encoder_without_weights(ws: Workspace) -> tuple[str, str]:
    ws.raw()
    ws.retrieve_run()
    folder = ws.without_weights("cross_encoder")
    ws.params["rerank"]["model"] = str(folder)
    return f"'{folder}'", "cannot load cross-encoder"


def _index_of_another_dimension(ws: Workspace) -> tuple[str, str]:
    ws.raw()
    ws.model()
    ws.index(dim=16)
    return "data/index/index.faiss:", "16-dimensional vectors but the model"


def _truncated_index(ws: Workspace) -> tuple[str, str]:
    ws.raw()
    ws.model()
    _truncate(ws.index() / "index.faiss")
    return "data/index/index.faiss:", "corrupt or truncated Faiss index"


def _truncated_embeddings(ws: Workspace) -> tuple[str, str]:
    _truncate(ws.embeddings() / "embeddings.npy")
    return "data/embeddings/embeddings.npy:", "corrupt or truncated embeddings file"


def _output_parent_is_a_file(ws: Workspace) -> tuple[str, str]:
    # Root ignores file modes, so a read-only folder would not stop the write; a regular
    # file where the output's folder must go stops everyone.
    ws.source()
    (ws.root / "data").write_text("a file where a folder must go\n", encoding="utf-8")
    return "data/raw:", "Not a directory"


def _write_fails_half_way(ws: Workspace) -> tuple[str, str]:
    ws.source()
    return "data/raw/tiny:", "File too large"


def _index_write_fails_half_way(ws: Workspace) -> tuple[str, str]:
    ws.embeddings()
    return "data/index:", "File too large"


def _train_split_without_positives(ws: Workspace) -> tuple[str, str]:
    raw = ws.raw()
    train = raw / "qrels" / "train.tsv"
    header, *rows = _lines(train)
    train.write_text("\n".join([header, *(r.rsplit("\t", 1)[0] + "\t0" for r in rows)]) + "\n")
    return "data/raw/tiny/qrels/train.tsv:", "split 'train' judges no document relevant"


def _model_write_fails_half_way(ws: Workspace) -> tuple[str, str]:
    ws.raw()
    ws.rows()
    ws.params["train"]["epochs"] = 0  # load the base model and save it: no training
    return "data/model:", "File too large"


CASES = [
    Bad("corpus-malformed-json", "download", _corpus_malformed_json),
    Bad("queries-malformed-json", "download", _queries_malformed_json),
    Bad("doc-without-id", "download", _doc_without_id),
    Bad("doc-without-text", "download", _doc_without_text),
    Bad("duplicate-doc-id", "download", _duplicate_doc_id),
    Bad("qrels-non-numeric-score", "download", _qrels_non_numeric_score),
    Bad("qrels-wrong-column-count", "download", _qrels_wrong_column_count),
    Bad("qrels-unknown-doc", "download", _qrels_unknown_doc),
    Bad("qrels-unknown-query", "download", _qrels_unknown_query),
    Bad("split-without-queries", "download", _split_without_queries),
    Bad("empty-corpus", "download", _empty_corpus),
    Bad("source-missing", "download", _source_missing),
    Bad("source-not-beir", "download", _source_not_beir),
    Bad("corpus-not-utf8", "download", _corpus_not_utf8),
    Bad("corpus-gzip-truncated", "download", _corpus_gzip_truncated),
    Bad("qrels-conflicting-judgements", "download", _qrels_conflicting_judgements),
    Bad("split-judging-nothing-relevant", "download", _split_judging_nothing_relevant),
    Bad(
        "dataset-name-leaving-the-workspace",
        "download",
        _param("dataset", "name", "../../elsewhere", "'dataset.name'", "it names a file or folder"),
    ),
    Bad(
        "dev-split-is-test",
        "retrieve",
        _param(
            "dataset",
            "dev_split",
            "test",
            "'dataset.dev_split' and 'dataset.test_split'",
            "every choice made on dev",
        ),
    ),
    Bad(
        "training-without-train-split",
        "train",
        _param("dataset", "train_split", "", "'train.epochs'", "has no train split"),
    ),
    Bad(
        "learning-rate-not-positive",
        "train",
        _param("train", "lr", 0.0, "'train.lr'", "must be > 0, got 0.0"),
    ),
    Bad("train-split-without-positives", "prepare", _train_split_without_positives),
    Bad(
        "unknown-loss",
        "train",
        _param("loss", "name", "triplet_hinge", "'loss.name'", "'triplet_hinge'; expected one of"),
    ),
    Bad(
        "unknown-config-key",
        "train",
        _param("train", "batch_sze", 4, "'train.batch_sze'", "not in 'TrainConfig'"),
    ),
    Bad(
        "config-key-wrong-type",
        "train",
        _param("train", "epochs", "many", "'train.epochs'", "could not be converted to Integer"),
    ),
    Bad(
        "unknown-rerank-fusion",
        "rerank",
        _param("rerank", "fusion", "max", "'rerank.fusion'", "'max'; expected one of"),
    ),
    Bad(
        "rerank-weight-above-one",
        "rerank",
        _param("rerank", "fusion_weights", [0.5, 1.5], "'rerank.fusion_weights'", "in [0, 1]"),
    ),
    Bad(
        "rerank-depth-zero",
        "rerank",
        _param("rerank", "depths", [0, 20], "'rerank.depths'", "ints > 0, got [0, 20]"),
    ),
    Bad(
        "tracking-uri-with-credentials",
        "evaluate",
        _param(
            "tracking",
            "uri",
            "http://alice:s3cret-pw@127.0.0.1:5001",
            "'tracking.uri' embeds credentials (http://***@127.0.0.1:5001)",
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        ),
    ),
    Bad(
        "unknown-precision",
        "train",
        _param("train", "precision", "fp8", "'train.precision'", "'fp8'; expected one of"),
    ),
    Bad(
        "batch-not-split-evenly-between-devices",
        "train",
        _param("train", "devices", 3, "'train.batch_size' (8)", "must be a multiple of it"),
    ),
    # Mixed precision needs CUDA: without it the stage stops rather than train in fp32 under
    # a bf16 label (on a GPU machine the case does not apply).
    *(
        []
        if torch.cuda.is_available()
        else [
            Bad("mixed-precision-without-cuda", "train", _mixed_precision_without_cuda),
            # Refused once, before torchrun starts two processes to refuse it twice.
            Bad("mixed-precision-without-cuda-ddp", "train", _mixed_precision_without_cuda_ddp),
        ]
    ),
    Bad("bi-encoder-without-weights", "train", _bi_encoder_without_weights),
    Bad("cross-encoder-without-weights", "rerank", _cross_encoder_without_weights),
    Bad("index-of-another-dimension", "retrieve", _index_of_another_dimension),
    Bad("truncated-index", "retrieve", _truncated_index),
    Bad("truncated-embeddings", "index", _truncated_embeddings),
    Bad("output-parent-is-a-file", "download", _output_parent_is_a_file),
    Bad(
        "write-fails-half-way",
        "download",
        _write_fails_half_way,
        during=lambda: _file_size_limit(4096),
    ),
    Bad(
        "index-write-fails-half-way",
        "index",
        _index_write_fails_half_way,
        during=lambda: _file_size_limit(4096),
    ),
    Bad(
        "model-write-fails-half-way",
        "train",
        _model_write_fails_half_way,
        during=lambda: _file_size_limit(4096),
    ),
]


def _plant_previous_outputs(ws: Workspace, stage: str) -> list[str]:
    """Write stand-ins for the outputs of an earlier run of ``stage``; return their paths.

    An output that cannot exist (a regular file where its folder must go) is skipped.
    """
    planted = []
    for rel in declared_outputs(stage, ws.params):
        path = ws.root / rel
        if any(p.exists() and not p.is_dir() for p in path.parents):
            continue
        if path.suffix:  # a file output
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"previous {rel}\n".encode())
        else:  # a folder output
            path.mkdir(parents=True)
            (path / "previous.bin").write_bytes(f"previous {rel}\n".encode())
        planted.append(rel)
    return planted


def _snapshot(root: Path) -> dict[str, Any]:
    """Every file (with its bytes) and folder under ``root``."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else "<folder>"
        for p in sorted(root.rglob("*"))
    }


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    return f"added {added}, removed {removed}, changed {changed}"


@pytest.fixture
def ws(tmp_path: Path, tiny_assets: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Workspace:
    # The workspace is the repository root (train's checkpoints, tracking's pending records).
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return Workspace(tmp_path, tiny_assets)


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "previous-output"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly(
    ws: Workspace, caplog: pytest.LogCaptureFixture, case: Bad, previous: bool
) -> None:
    """The stage exits 1 with one one-line ERROR naming where and what, and changes nothing
    in the workspace: no output appears and a previous output stays byte for byte."""
    where, what = case.setup(ws)
    ws.write_params()
    if previous:
        assert _plant_previous_outputs(ws, case.stage), "nothing to plant"
    before = _snapshot(ws.root)

    caplog.clear()
    with pytest.raises(SystemExit) as exit_info, case.during():
        ws.run(case.stage)

    assert exit_info.value.code == 1, f"exit status {exit_info.value.code}, expected 1"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, f"expected exactly one ERROR, got {errors}"
    message = errors[0]
    assert "\n" not in message, f"the error spans several lines:\n{message}"
    assert message.startswith(f"{case.stage} failed: "), message
    assert where in message, f"the error does not say where ({where!r}): {message}"
    assert what in message, f"the error does not say what is wrong ({what!r}): {message}"
    after = _snapshot(ws.root)
    assert after == before, f"the failed stage changed the workspace: {_diff(before, after)}"


# --- retrieve.top_k larger than the corpus: clamped with a warning, not an error -----------


def test_top_k_larger_than_corpus_is_clamped(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """retrieve.top_k above the corpus size completes, warns once naming retrieve.top_k, and
    writes a run holding every document of the corpus for every test query."""
    ws.raw()
    ws.model()
    ws.index()
    ws.params["retrieve"]["top_k"] = 1000
    ws.write_params()

    caplog.clear()
    ws.run("retrieve")

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    clamped = [w for w in warnings if "retrieve.top_k" in w]
    assert len(clamped) == 1, f"expected one warning about retrieve.top_k, got {warnings}"
    assert "1000" in clamped[0] and str(len(ws.doc_ids)) in clamped[0], clamped[0]
    run = read_trec_run(ws.path("data/runs/retrieve.trec"))
    test_qids = read_beir(ws.assets["beir"], ["test"]).qrels["test"].keys()
    assert run.keys() == test_qids
    for qid, docs in run.items():
        assert sorted(docs) == sorted(ws.doc_ids), f"{qid} has {len(docs)} docs, not the corpus"
