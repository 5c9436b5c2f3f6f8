"""benchmarks/gpu_fulltrain.py: the stage runner that stands in for DVC on a GPU machine, and
the model packing that gets the base model under the transfer cap.

The GPU run itself needs a GPU machine; what decides whether its numbers mean anything runs
here: that a stage reruns exactly when ``dvc repro`` would rerun it, and that the packed model
encodes the dataset's texts as the float16-rounded original does.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu():
    path = REPO / "benchmarks" / "gpu_fulltrain.py"
    spec = importlib.util.spec_from_file_location("irtune_gpu_fulltrain", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# A toy pipeline in dvc.yaml's shape: a <- param a.x; b <- a's output and param b.y;
# c <- b's output and every param. Each stage appends its name to a shared log when it runs.
TOY = {
    "stages": {
        "a": {
            "cmd": "python -c \"import sys; open('a.txt','w').write(sys.argv[1]); "
            "open('${log}','a').write('a ')\" ${a.x}",
            "deps": ["stages"],
            "params": ["a.x"],
            "outs": ["a.txt"],
        },
        "b": {
            "cmd": "python -c \"import sys; open('b.txt','w').write(open('a.txt').read() + "
            "sys.argv[1]); open('${log}','a').write('b ')\" ${b.y}",
            "deps": ["a.txt"],
            "params": ["b"],
            "outs": ["b.txt"],
        },
        "c": {
            "cmd": "python -c \"open('c.txt','w').write(open('b.txt').read()); "
            "open('${log}','a').write('c ')\"",
            "deps": ["b.txt"],
            "params": [{"params.yaml": None}],
            "metrics": [{"c.txt": {"cache": False}}],
        },
    }
}


def _params(tmp_path: Path, name: str, x: str, y: str, z: str = "0") -> Path:
    path = tmp_path / "params" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    log = str(tmp_path / "ran.log")
    path.write_text(yaml.safe_dump({"log": log, "a": {"x": x}, "b": {"y": y}, "z": z}))
    return path


def test_read_stages_resolves_the_real_dvc_yaml(gpu) -> None:
    """The repository's own dvc.yaml: file order, paths resolved, params as DVC reads them."""
    params = yaml.safe_load((REPO / "conf" / "config.yaml").read_text()) | {
        "dataset": {"name": "nfcorpus"}
    }
    stages = gpu.read_stages(REPO / "dvc.yaml", params)
    names = [s.name for s in stages]
    assert names == list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    by_name = {s.name: s for s in stages}
    assert "data/raw/nfcorpus" in by_name["download"].outs
    assert "data/raw/nfcorpus" in by_name["train"].deps
    assert "metrics/eval.json" in by_name["evaluate"].outs
    assert by_name["evaluate"].params is None  # `params.yaml:` = every param
    assert "retrieve" in by_name["retrieve"].params
    assert "${" not in " ".join(s.cmd for s in stages)


def test_runner_reruns_what_changed_and_reuses_other_workspaces(gpu, tmp_path: Path) -> None:
    """As `dvc repro` would: a stage reruns when its params or an upstream stage changed; a
    stage another workspace ran with the same inputs is copied, not rerun."""
    source = tmp_path / "checkout"
    (source / "stages").mkdir(parents=True)
    (source / "dvc.yaml").write_text(yaml.safe_dump(TOY, sort_keys=False))
    runner = gpu.Runner(tmp_path / "work", tmp_path / "log.txt", source=source)
    ran = tmp_path / "ran.log"

    def job(name: str, workspace: str, **params: str) -> list[str]:
        ran.write_text("")
        walls = runner.run_job(gpu.Job(name, workspace, ()), _params(tmp_path, name, **params))
        assert set(walls) == {"a", "b", "c"}
        return ran.read_text().split()

    assert job("first", "one", x="1", y="2") == ["a", "b", "c"]
    assert (tmp_path / "work/one/c.txt").read_text() == "12"
    assert job("same", "one", x="1", y="2") == []
    assert job("new_y", "one", x="1", y="3") == ["b", "c"]
    assert (tmp_path / "work/one/c.txt").read_text() == "13"
    assert job("unrelated", "one", x="1", y="3", z="9") == ["c"]
    assert job("new_x", "one", x="5", y="3", z="9") == ["a", "b", "c"]
    # A second workspace with the params workspace one last ran: every stage is copied.
    assert job("other", "two", x="5", y="3", z="9") == []
    assert (tmp_path / "work/two/c.txt").read_text() == "53"
    # With a new z there, a and b are still copied (their inputs match) and c reruns.
    assert job("other_z", "three", x="5", y="3", z="1") == ["c"]
    assert (tmp_path / "work/three/b.txt").read_text() == "53"
    # A failing stage stops the job with its name.
    bad = json.loads(json.dumps(TOY))
    bad["stages"]["b"]["cmd"] = 'python -c "raise SystemExit(3)"'
    (source / "dvc.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    with pytest.raises(RuntimeError, match="failed_b/b failed"):
        runner.run_job(gpu.Job("failed_b", "four", ()), _params(tmp_path, "f", x="7", y="3"))


def test_packed_model_encodes_the_dataset_as_the_fp16_rounded_original(
    gpu, tmp_path: Path, tiny_beir: Path, tiny_bi_encoder: Path
) -> None:
    """Rows of tokens the dataset never produces are zeroed, and no text of the dataset can
    tell: its embeddings equal those of the same model with every weight rounded to fp16."""
    import torch
    from safetensors.torch import load_file, save_file

    from irtune.beir import doc_text, read_beir
    from irtune.models import load_bi_encoder

    # The reference: the original model with its weights rounded to float16 and back.
    rounded = tmp_path / "rounded"
    shutil.copytree(tiny_bi_encoder, rounded)
    state = load_file(str(rounded / gpu.MODEL_FILE))
    save_file(
        {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()},
        str(rounded / gpu.MODEL_FILE),
    )
    gpu.pack_model(tiny_bi_encoder, tiny_beir, tmp_path / "packed")
    assert not (tmp_path / "packed" / gpu.MODEL_FILE).exists()
    gpu.unpack_model(tmp_path / "packed", tmp_path / "unpacked")

    unpacked = load_file(str(tmp_path / "unpacked" / gpu.MODEL_FILE))
    (name,) = [k for k in unpacked if k.endswith("word_embeddings.weight")]
    zeroed = int((unpacked[name].abs().sum(dim=1) == 0).sum())
    assert 0 < zeroed < unpacked[name].shape[0]
    assert all(v.dtype != torch.float16 for v in unpacked.values())

    dataset = read_beir(tiny_beir, ["train", "dev", "test"])
    texts = [doc_text(d) for d in dataset.corpus.values()] + list(dataset.queries.values())
    a = load_bi_encoder(str(rounded)).encode(texts, convert_to_numpy=True)
    b = load_bi_encoder(str(tmp_path / "unpacked")).encode(texts, convert_to_numpy=True)
    np.testing.assert_array_equal(a, b)


def _job_files(name: str, ndcg: list[float], dev: float | None) -> dict[str, bytes]:
    """The files a finished job leaves, as `run` packs them (a few of RESULT_FILES)."""
    per_query = {f"q{i}": {"ndcg_at_10": v, "recall_at_100": v, "mrr_at_10": v, "map_at_100": v}
                 for i, v in enumerate(ndcg)}  # fmt: skip
    mean = {m: sum(q[m] for q in per_query.values()) / len(ndcg) for m in per_query["q0"]}
    summary = {"train_rows": 10, "steps": 2} | ({"dev_ndcg_at_10": dev} if dev else {})
    significance = {"ndcg_at_10": {"p_value": 0.5, "verdict": "no significant difference"}}
    files = {
        "metrics/eval.json": {"retrieve": mean, "rerank": mean},
        "metrics/significance.json": {"retrieve": significance},
        "metrics/train.json": {"summary": summary},
        "metrics/retrieve.json": {"mode": "dense", "top_k": 10},
        "data/eval/per_query.json": {"retrieve": per_query, "rerank": per_query},
    }
    return {f"{name}/{rel}": json.dumps(data).encode() for rel, data in files.items()}


def test_results_archives_merge_into_one_report(gpu, tmp_path: Path) -> None:
    """Two calls' archives (the second adding a job) give one table: each job's means, and
    the paired test against the baseline job that irtune.evaluate.compare computes."""
    from irtune.evaluate import compare

    machine = {"gpu": "test"}
    plain, better = [0.2, 0.3, 0.4, 0.5], [0.3, 0.45, 0.5, 0.65]
    first, second = tmp_path / "1.tar.gz", tmp_path / "2.tar.gz"
    job = {"overrides": [], "stage_seconds": {"train": 12.0}}
    gpu._pack({"machine": machine, "jobs": {"plain": job}}, _job_files("plain", plain, 0.3), first)
    skipped = {"plain_prf": {"skipped": "budget"}, "best": job}
    gpu._pack({"machine": machine, "jobs": skipped}, _job_files("best", better, 0.4), second)

    table = gpu.report([first, second], "plain", tmp_path / "out")
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| job", "| plain", "| best"]  # none skipped
    expected = compare(
        {f"q{i}": {"ndcg_at_10": v} for i, v in enumerate(better)},
        {f"q{i}": {"ndcg_at_10": v} for i, v in enumerate(plain)},
        0.05,
    )["ndcg_at_10"]
    assert f"{expected['p_value']:.3g} ({expected['verdict']})" in rows[2]
    assert f"| {sum(better) / 4:.4f} |" in rows[2] and "| 0.4000 |" in rows[2]
    assert (tmp_path / "out/best/data/eval/per_query.json").is_file()
