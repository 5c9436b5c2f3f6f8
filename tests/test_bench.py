"""The benchmark suite runs (``--quick``, tiny assets) and writes sane figures: it cannot rot.

No timing or memory is asserted, only that every section produces its keys with possible
values.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def _bench():
    """benchmarks/bench.py, loaded by path as ``python benchmarks/bench.py`` would run it."""
    # As a script it finds its section modules beside it (sys.path[0]); loaded by path, it
    # needs that folder on sys.path.
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("irtune_bench", BENCHMARKS / "bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _positive(value: float) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def _load(entry: dict) -> None:
    for key in ("load_before", "load_after"):
        assert len(entry[key]["loadavg"]) == 3, entry[key]
        assert entry[key]["cpu_count"] >= 1, entry[key]


@pytest.fixture(scope="module")
def quick(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_beir: Path,
    tiny_bi_encoder: Path,
    tiny_cross_encoder: Path,
):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = [
        *("--quick", "--only", "encode,train,rerank,gpu,index", "--out", str(out)),
        *("--data", str(tiny_beir), "--model", str(tiny_bi_encoder)),
        *("--reranker", str(tiny_cross_encoder), "--index-sizes", "1000,3000"),
    ]
    returned = _bench().main(argv)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["sections"].keys() == returned["sections"].keys()
    return written


def test_report_names_the_machine(quick: dict) -> None:
    assert quick["quick"] is True
    assert quick["machine"]["cpu_count"] >= 1
    assert set(quick["sections"]) == {"encode", "train", "rerank", "gpu", "index"}


def test_encode_section(quick: dict) -> None:
    encode = quick["sections"]["encode"]
    _load(encode)
    assert encode["docs"] == 60
    comparison = encode["irtune_vs_plain"]
    assert _positive(comparison["plain_best_docs_per_s"])
    assert _positive(comparison["ratio_irtune_over_plain"])
    # The same model and texts: irtune's path must embed exactly what the plain call does.
    assert comparison["max_abs_diff"] < 1e-5
    assert set(encode["backends"]) == {
        "torch-fp32",
        "onnx-fp32",
        "onnx-int8",
        "openvino-fp32",
        "openvino-bf16",
    }
    for key, result in encode["backends"].items():
        assert "error" not in result, (key, result)
        assert _positive(result["docs_per_s"]), (key, result)
        assert 0.0 <= result["ndcg_at_10"] <= 1.0, (key, result)
        assert 0.9 < result["cosine_to_torch_min"] <= 1.0 + 1e-5, (key, result)
        assert _positive(result["speedup_vs_torch"]), (key, result)
    assert encode["backends"]["torch-fp32"]["ndcg_delta_vs_torch"] == 0.0


def test_train_section(quick: dict) -> None:
    train = quick["sections"]["train"]
    _load(train)
    assert train["pairs"] > 0
    for key in ("end_to_end", "loop"):
        assert _positive(train[f"irtune_pairs_per_s_{key}"])
        assert _positive(train[f"plain_pairs_per_s_{key}"])
        assert _positive(train[f"ratio_{key}"])
    # irtune's loop time is the one train() reports (TrainResult.loop_seconds), per run.
    for name in ("irtune", "plain"):
        assert len(train["runs"][name]) == train["repeats"], train["runs"]
        for run in train["runs"][name]:
            assert _positive(run["loop_s"]) and _positive(run["total_s"]), (name, run)


def test_rerank_section(quick: dict) -> None:
    rerank = quick["sections"]["rerank"]
    _load(rerank)
    assert rerank["pairs"] > 0 and rerank["depth"] == 5
    assert 0.0 <= rerank["first_stage_ndcg_at_10"] <= 1.0
    comparison = rerank["irtune_vs_plain"]
    assert _positive(comparison["plain_best_pairs_per_s"])
    assert _positive(comparison["ratio_irtune_over_plain"])
    # The same model and pairs: irtune's path must score exactly what the plain call does.
    assert comparison["max_abs_diff"] < 1e-5
    assert set(rerank["backends"]) == {
        "torch-fp32",
        "onnx-fp32",
        "onnx-int8",
        "openvino-fp32",
        "openvino-bf16",
    }
    for key, result in rerank["backends"].items():
        assert "error" not in result, (key, result)
        assert _positive(result["pairs_per_s"]), (key, result)
        assert 0.0 <= result["ndcg_at_10"] <= 1.0, (key, result)
        assert 0.0 <= result["max_abs_score_diff_vs_torch"] < 0.1, (key, result)
    assert rerank["backends"]["torch-fp32"]["max_abs_score_diff_vs_torch"] == 0.0
    assert rerank["backends"]["onnx-fp32"]["max_abs_score_diff_vs_torch"] < 1e-4


def test_rerank_section_skips_without_a_cross_encoder(tmp_path: Path, tiny_beir: Path) -> None:
    report = _bench().main(
        ["--quick", "--only", "rerank", "--data", str(tiny_beir), "--out", str(tmp_path / "r")]
    )
    assert "no cross-encoder given" in report["sections"]["rerank"]["skipped"]


@pytest.mark.skipif(torch_cuda(), reason="checks the section's skip on a machine without a GPU")
def test_gpu_section_says_why_it_skipped(quick: dict) -> None:
    gpu = quick["sections"]["gpu"]
    _load(gpu)
    assert gpu["skipped"].startswith("no CUDA GPU"), gpu
    assert set(gpu) == {"skipped", "load_before", "load_after", "wall_s"}, gpu


def test_gpu_table_reads_what_the_gpu_section_writes(quick: dict) -> None:
    """On a GPU the section is the train (bf16, scored) and encode sections' figures: the
    table reads every key it prints from them (no GPU here to run it for real)."""
    sections = quick["sections"]
    train = sections["train"] | {
        "precision": "bf16",
        "test_ndcg_at_10": {"irtune": 0.3, "plain": 0.3},
    }
    lines = _bench().gpu_table(
        {"device": "GPU", "device_count": 1, "train": train, "encode": sections["encode"]}
    )
    assert any("bf16: irtune" in line and "ratio" in line for line in lines), lines
    assert sum("docs/s  NDCG@10" in line for line in lines) == len(sections["encode"]["backends"])


def test_index_section(quick: dict) -> None:
    index = quick["sections"]["index"]
    _load(index)
    assert "Gaussian" in index["distribution"]
    assert set(index["sizes"]) == {"1000", "3000"}
    for entry in index["sizes"].values():
        assert entry["flat"]["recall"] == 1.0
        assert _positive(entry["flat"]["qps"])
        for kind in ("hnsw", "ivf"):
            assert entry[kind]["build_s"] >= 0
            assert entry[kind]["search"], entry[kind]
            for point in entry[kind]["search"].values():
                assert 0.0 <= point["recall_at_10"] <= 1.0, point
                assert _positive(point["qps"]), point
        # The widest search is near-exact on clustered data this small.
        widest = list(entry["hnsw"]["search"].values())[-1]
        assert widest["recall_at_10"] > 0.9, entry["hnsw"]


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The quick scale section: the whole pipeline, stage by stage, on a synthetic corpus."""
    out = tmp_path_factory.mktemp("bench") / "scale.json"
    returned = _bench().main(["--quick", "--only", "scale", "--out", str(out)])
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["sections"].keys() == returned["sections"].keys() == {"scale"}
    return written


def test_scale_section(scale: dict) -> None:
    from harness import STAGES

    x = scale["sections"]["scale"]
    _load(x)
    assert (x["docs"], x["queries"], x["dim"]) == (5_000, 200, 256)
    assert _positive(x["corpus_text_bytes"]) and _positive(x["pipeline_wall_s"])
    assert set(x["sizes_mib"]) == {"corpus_text", "embeddings", "index", "retrieve_run", "runs"}
    assert all(_positive(v) for v in x["sizes_mib"].values()), x["sizes_mib"]
    assert list(x["stages"]) == STAGES  # every stage, in dvc.yaml's order
    for name, stage in x["stages"].items():
        assert _positive(stage["wall_s"]) and _positive(stage["peak_rss_mib"]), (name, stage)
        assert stage["cpu_s"] >= 0, (name, stage)
        assert stage["needs_mib"] and all(_positive(v) for v in stage["needs_mib"].values())
        assert stage["needs_total_mib"] == pytest.approx(sum(stage["needs_mib"].values()), abs=0.2)
        assert "floor_mib" not in stage  # --quick measures no floor
    assert x["max_peak_rss_mib"] == max(s["peak_rss_mib"] for s in x["stages"].values())
    assert "SCALE (5000 docs" in _bench().table(scale)


def _scale_module():
    _bench()  # puts benchmarks/ on sys.path
    import bench_scale

    return bench_scale


@pytest.mark.parametrize("gnu_time", [True, False], ids=["gnu-time", "launcher"])
def test_measure_reports_a_peak(
    gnu_time: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GNU time or, where it is missing, the small launcher: seconds and a peak."""
    bench_scale = _scale_module()
    if not gnu_time:
        monkeypatch.setattr(bench_scale, "GNU_TIME", tmp_path / "no-time")
    elif not bench_scale.GNU_TIME.is_file():
        pytest.skip("no GNU time here")
    figures = bench_scale.measure([sys.executable, "-c", "pass"], tmp_path, {}, tmp_path / "x.log")
    assert set(figures) == {"wall_s", "cpu_s", "peak_rss_mib"}
    assert _positive(figures["peak_rss_mib"]) and figures["wall_s"] >= 0 <= figures["cpu_s"]


def test_measure_names_a_failed_command(tmp_path: Path) -> None:
    bench_scale = _scale_module()
    with pytest.raises(RuntimeError, match=r"exited 3:\n(.|\n)*what went wrong"):
        bench_scale.measure(
            [sys.executable, "-c", "print('what went wrong'); raise SystemExit(3)"],
            tmp_path,
            {},
            tmp_path / "x.log",
        )


def test_synthetic_dataset_is_seeded(tmp_path: Path) -> None:
    """The same seed writes the same bytes; the dataset reads as BEIR, every split judged."""
    from irtune.beir import read_beir

    bench_scale = _scale_module()
    facts = [bench_scale.write_synthetic_beir(tmp_path / name, 300, 40, seed=1) for name in "ab"]
    assert facts[0] == facts[1]
    for rel in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    dataset = read_beir(tmp_path / "a", ["train", "dev", "test"])
    assert len(dataset.corpus) == 300 and len(dataset.queries) == 40
    assert sum(len(q) for q in dataset.qrels.values()) == 40
    lengths = [len(doc["text"].split()) for doc in dataset.corpus.values()]
    assert min(lengths) >= bench_scale.MIN_WORDS and max(lengths) <= bench_scale.MAX_WORDS


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown section"):
        _bench().main(["--only", "encode,tpu", "--out", str(tmp_path / "x.json")])


def test_one_module_per_section() -> None:
    """Each section is its own module beside bench.py, with its one public function."""
    for name in _bench().SECTIONS:
        module = sys.modules[f"bench_{name}"]
        assert Path(module.__file__).parent == BENCHMARKS, module
        assert callable(getattr(module, f"bench_{name}")), module
        assert module.__doc__, module
    assert Path(sys.modules["common"].__file__).parent == BENCHMARKS


@pytest.mark.e2e
@pytest.mark.slow  # 90 s; tests/e2e checks the same no-op repro, test_contract the deps
def test_orchestration_reruns_only_what_a_change_touches(tmp_path: Path) -> None:
    """A real DVC workspace: no-op repro reruns nothing; top_k changes rerun the stages after."""
    out = tmp_path / "bench.json"
    report = _bench().main(["--only", "orchestration", "--out", str(out)])
    orch = report["sections"]["orchestration"]
    _load(orch)
    assert "download" in orch["first_repro_stages"], orch
    assert orch["noop_repro_reran"] == [], orch
    assert all(_positive(s) for s in orch["noop_repro_s"]), orch
    assert set(orch["changes"]) == {"rerank.top_k", "retrieve.top_k"}, orch
    for key, expected in orch["expected"].items():
        assert sorted(orch["changes"][key]["reran"]) == sorted(expected), (key, orch)
