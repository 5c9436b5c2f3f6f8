"""End-to-end: the real pipeline, with the real DVC, Hydra, Sentence Transformers, Faiss and
MLflow, in a throwaway git repository built from this checkout.

The phases run in file order and share one repository (module-scoped fixture):

1. ``dvc repro`` runs every stage of dvc.yaml (download ... evaluate), writes sane metrics
   and logs one MLflow run; a second ``dvc repro`` reruns nothing.
2. ``dvc exp run -S loss=cosent`` (a workspace experiment) logs a second run.
3. A queued two-experiment sweep, run by a ``dvc queue`` worker in DVC's temporary copies,
   logs two more runs -- into the *same* store as the workspace runs.
4. ``make compare`` tests those two experiments against each other per query.
5. A named sweep (``python -m irtune.sweep run``) survives its failing members and writes
   its report; the MLflow UI shows it in a real browser.

A phase is skipped when the one before it failed, so a failure is reported once.
No mocks: every command is a subprocess, exactly as a user would type it.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from irtune.workspace import copy_checkout

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
if not VENV_BIN.is_dir():  # a venv elsewhere: the one running pytest
    VENV_BIN = Path(sys.executable).parent
STAGES = ("download", "prepare", "train", "encode", "index", "retrieve", "rerank", "evaluate")
METRICS = ("ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100")
# Untracked files that are pipeline *products* of whoever ran the pipeline in this checkout
# (another config, another dataset), not uncommitted source work: never copied.
GENERATED = ("dvc.lock", "params.yaml", "metrics/", "data/", "mlflow.db")
QUEUE_TIMEOUT_S = 20 * 60
OUTPUT_TAIL = 12_000


@dataclass
class E2ERepo:
    root: Path
    env: dict[str, str]
    assets: dict[str, Path]
    passed: set[str] = field(default_factory=set)
    first_run_id: str = ""
    exp_run_id: str = ""

    def run(self, *cmd: str, timeout: float = 1800, check: bool = True) -> str:
        """Run ``cmd`` in the repository; return stdout+stderr; fail showing them."""
        start = time.perf_counter()
        # A file, not a pipe: `dvc queue start` forks a worker that inherits stdout, and
        # reading a pipe would wait for that worker to exit.
        with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
            proc = subprocess.run(
                cmd,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
            log.seek(0)
            output = log.read()
        took = time.perf_counter() - start
        print(f"[e2e] {' '.join(cmd)}: exit {proc.returncode} in {took:.1f}s", flush=True)
        if check:
            assert proc.returncode == 0, (
                f"`{' '.join(cmd)}` exited {proc.returncode} in {self.root}; output tail:\n"
                f"{output[-OUTPUT_TAIL:]}"
            )
        return output

    def dvc(self, *args: str, **kwargs: Any) -> str:
        return self.run("dvc", *args, **kwargs)

    def require(self, phase: str) -> None:
        if phase not in self.passed:
            pytest.skip(f"needs {phase}, which failed or did not run")

    def mlflow_runs(self) -> list:
        """All runs in the ``irtune`` experiment of ``<root>/mlflow.db``, oldest first."""
        from mlflow.tracking import MlflowClient

        db = self.root / "mlflow.db"
        assert db.is_file(), f"no MLflow store at {db}; files at the root: {_ls(self.root)}"
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        experiment = client.get_experiment_by_name("irtune")
        names = [e.name for e in client.search_experiments()]
        assert experiment is not None, f"no 'irtune' experiment in {db}; experiments: {names}"
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        return sorted(runs, key=lambda r: r.info.start_time)

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{self.root / 'mlflow.db'}")
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _ls(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _tiny_config(config: Path, assets: dict[str, Path]) -> None:
    """Point conf/config.yaml at the tiny assets and shrink everything that costs time."""
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert "defaults" in cfg, f"{config} lost its Hydra defaults list: {cfg}"
    cfg["dataset"]["name"] = "tiny"
    cfg["dataset"]["source"] = str(assets["beir"])
    cfg["model"]["base"] = str(assets["bi_encoder"])
    cfg["rerank"].update(model=str(assets["cross_encoder"]), max_length=128, top_k=10)
    # 72 train pairs / batch 8 = 9 steps an epoch: log the loss every 2 so it is a curve.
    cfg["train"].update(max_seq_length=64, batch_size=8, epochs=1, logging_steps=2)
    cfg["retrieve"]["top_k"] = 20
    cfg["encode"]["batch_size"] = 16
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")


def _worker_pids(root: Path) -> list[int]:
    """PIDs of this repository's `dvc queue` workers, from dvc-task's process records."""
    pids = []
    for info in (root / ".dvc" / "tmp").rglob("dvc-exp-worker-*.json"):
        try:
            pid = json.loads(info.read_text()).get("pid")
        except (OSError, ValueError):
            continue
        if isinstance(pid, int) and _alive(pid):
            pids.append(pid)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_queue(repo: E2ERepo) -> None:
    """Stop the queue workers this test started; never leave processes behind."""
    if not (repo.root / ".dvc" / "tmp" / "exps").exists():
        return
    print(f"[e2e] queue workers before stop: {_worker_pids(repo.root)}", flush=True)
    repo.dvc("queue", "stop", "--kill", check=False, timeout=120)
    deadline = time.monotonic() + 60
    while (pids := _worker_pids(repo.root)) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in pids:  # workers we spawned that ignored the shutdown request
        print(f"[e2e] queue worker {pid} still alive; sending SIGTERM", flush=True)
        os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def repo(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_beir: Path,
    tiny_bi_encoder: Path,
    tiny_cross_encoder: Path,
):
    root = tmp_path_factory.mktemp("e2e") / "repo"
    root.mkdir()
    copy_checkout(REPO, root, skip=GENERATED)
    env = {
        k: v
        for k, v in os.environ.items()
        # The store must be the default one; never inherit a DVC stage/experiment context.
        if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")
    }
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        # Relative: every stage imports the irtune of the repository copy it runs in (the
        # venv's editable install points at the live checkout, which may change meanwhile).
        PYTHONPATH="src",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        DVC_NO_ANALYTICS="1",
    )
    assets = {"beir": tiny_beir, "bi_encoder": tiny_bi_encoder, "cross_encoder": tiny_cross_encoder}
    e2e = E2ERepo(root=root, env=env, assets=assets)

    e2e.run("git", "init", "-q")
    e2e.run("git", "config", "user.name", "irtune e2e")
    e2e.run("git", "config", "user.email", "e2e@irtune.invalid")
    e2e.run("git", "config", "commit.gpgsign", "false")
    _tiny_config(root / "conf" / "config.yaml", assets)
    e2e.run("python", "-m", "irtune.compose")
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    assert params["dataset"]["source"] == str(tiny_beir), params
    assert params["loss"]["name"] == "mnrl", params
    e2e.run("git", "add", "-A")
    e2e.run("git", "commit", "-q", "-m", "e2e: tiny config")
    print(f"[e2e] repository: {root}", flush=True)
    try:
        yield e2e
    finally:
        _stop_queue(e2e)


def _check_eval(path: Path) -> dict[str, dict[str, float]]:
    metrics = json.loads(path.read_text(encoding="utf-8"))
    for run in ("retrieve", "rerank"):
        assert run in metrics, f"{path}: no '{run}' section: {metrics}"
        for name in METRICS:
            value = metrics[run].get(name)
            assert isinstance(value, float | int) and not math.isnan(value), (
                f"{path}: {run}.{name} = {value!r}"
            )
            assert 0.0 <= value <= 1.0, f"{path}: {run}.{name} = {value} not in [0, 1]"
    return metrics


def _head(repo: E2ERepo) -> str:
    return repo.run("git", "rev-parse", "HEAD").strip()


def _exp_names(repo: E2ERepo) -> set[str]:
    out = repo.dvc("exp", "list", "--name-only")
    return {line.strip() for line in out.splitlines() if line.strip()}


def _exp_params(repo: E2ERepo, source: str = "params.yaml") -> dict[str, dict[str, Any]]:
    """``dvc exp show --json``: experiment name -> the data of its params.yaml (or, with
    ``source="metrics/eval.json"``, of that metrics file)."""
    shown = json.loads(repo.dvc("exp", "show", "--json"))
    found: dict[str, dict[str, Any]] = {}
    kind = "params" if source == "params.yaml" else "metrics"

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            name, data = node.get("name"), node.get("data")
            if name and isinstance(data, dict) and kind in data:
                found[name] = (data[kind] or {}).get(source, {}).get("data", {})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(shown)
    return found


def test_repro_runs_all_stages_and_logs_one_run(repo: E2ERepo) -> None:
    dvc_yaml = yaml.safe_load((repo.root / "dvc.yaml").read_text(encoding="utf-8"))
    stages = list(dvc_yaml["stages"])
    assert set(STAGES) <= set(stages), f"dvc.yaml lost stages: {set(STAGES) - set(stages)}"
    out = repo.dvc("repro")
    missing = [s for s in stages if f"Running stage '{s}'" not in out]
    assert not missing, f"stages not run by `dvc repro`: {missing}; output:\n{out[-OUTPUT_TAIL:]}"
    metrics = _check_eval(repo.root / "metrics" / "eval.json")

    again = repo.dvc("repro")
    assert "Running stage" not in again, f"second `dvc repro` reran stages:\n{again}"
    assert "Data and pipelines are up to date" in again, again

    runs = repo.mlflow_runs()
    assert len(runs) == 1, f"expected 1 MLflow run, got {[r.info.run_name for r in runs]}"
    run = runs[0]
    params, tags = run.data.params, run.data.tags
    expected = {
        "train.batch_size": "8",
        "train.epochs": "1",
        "loss.name": "mnrl",
        "dataset.source": str(repo.assets["beir"]),
        "model.base": str(repo.assets["bi_encoder"]),
        "rerank.top_k": "10",
    }
    assert {k: params.get(k) for k in expected} == expected
    loss_curve = repo.history(run.info.run_id, "train_loss")
    assert len({step for step, _ in loss_curve}) > 1, f"train_loss history: {loss_curve}"
    dev_curve = repo.history(run.info.run_id, "dev_ndcg_at_10")
    assert len(dev_curve) == 1, f"dev_ndcg_at_10 history after 1 epoch: {dev_curve}"
    for section in ("retrieve", "rerank"):
        for name in METRICS:
            logged = run.data.metrics.get(f"{section}.{name}")
            assert logged == pytest.approx(metrics[section][name]), (
                f"MLflow {section}.{name}={logged} but metrics/eval.json says "
                f"{metrics[section][name]}"
            )
    assert re.fullmatch(r"[0-9a-f]{40}", tags.get("git_commit", "")), tags
    assert tags["git_commit"] == _head(repo), "git_commit is not the commit the run was made on"
    assert tags.get("dataset") == "tiny", tags
    assert tags.get("base_model") == str(repo.assets["bi_encoder"]), tags
    assert run.info.status == "FINISHED", run.info

    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-q", "-m", "e2e: baseline run")
    assert not repo.run("git", "status", "--porcelain").strip(), "repro left untracked files"
    repo.first_run_id = run.info.run_id
    repo.passed.add("repro")


def test_workspace_experiment_logs_a_second_run(repo: E2ERepo) -> None:
    repo.require("repro")
    out = repo.dvc("exp", "run", "-S", "loss=cosent")
    assert "Running stage 'train'" in out, out[-OUTPUT_TAIL:]
    assert "Running stage 'download'" not in out, "download reran though `dataset` is unchanged"
    metrics = _check_eval(repo.root / "metrics" / "eval.json")

    shown = _exp_params(repo)
    cosent = [name for name, p in shown.items() if p.get("loss", {}).get("name") == "cosent"]
    assert len(cosent) == 1, f"`dvc exp show --json` experiments and params: {shown}"
    assert cosent[0] in _exp_names(repo)

    runs = repo.mlflow_runs()
    assert len(runs) == 2, f"expected 2 MLflow runs, got {[r.info.run_name for r in runs]}"
    new = [r for r in runs if r.info.run_id != repo.first_run_id]
    assert len(new) == 1, [r.info.run_id for r in runs]
    run = new[0]
    assert run.data.params.get("loss.name") == "cosent", run.data.params
    assert run.data.tags.get("dvc_exp_name") == cosent[0], run.data.tags
    head = _head(repo)
    assert run.data.tags.get("dvc_exp_baseline_rev") == head, (head, run.data.tags)
    assert run.data.tags.get("git_commit") == head, (head, run.data.tags)
    assert run.data.metrics["rerank.ndcg_at_10"] == pytest.approx(metrics["rerank"]["ndcg_at_10"])
    repo.exp_run_id = run.info.run_id
    repo.passed.add("exp_run")


def _queue_table(repo: E2ERepo) -> tuple[str, dict[str, int]]:
    out = repo.dvc("queue", "status")
    counts: dict[str, int] = {}
    for line in out.splitlines():
        # Task  Name  Created  Status
        cells = line.split()
        if cells and cells[-1] in ("Queued", "Running", "Success", "Failed"):
            counts[cells[-1]] = counts.get(cells[-1], 0) + 1
    return out, counts


def _queue_logs(repo: E2ERepo) -> str:
    out, _ = _queue_table(repo)
    logs = [out]
    for line in out.splitlines()[1:]:
        cells = line.split()
        if cells and cells[-1] in ("Running", "Success", "Failed"):
            logs.append(repo.dvc("queue", "logs", cells[0], check=False)[-4000:])
    return "\n".join(logs)


def test_queued_sweep_lands_in_the_same_store(repo: E2ERepo) -> None:
    repo.require("exp_run")
    before = _exp_names(repo)
    repo.dvc("exp", "run", "--queue", "-S", "loss=mnrl,cosent", "-S", "train.epochs=2")
    out, counts = _queue_table(repo)
    assert counts.get("Queued") == 2, f"expected 2 queued experiments:\n{out}"

    # Two workers: the experiments run in parallel and must not mix their tracking.
    repo.dvc("queue", "start", "-j", "2")
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        out, counts = _queue_table(repo)
        if not counts.get("Queued") and not counts.get("Running"):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"queue not done after {QUEUE_TIMEOUT_S}s:\n{_queue_logs(repo)}")
        time.sleep(10)  # each `dvc queue status` costs seconds of CPU the worker needs
    assert counts.get("Success") == 2 and not counts.get("Failed"), _queue_logs(repo)

    new_names = _exp_names(repo) - before
    assert len(new_names) == 2, f"new experiments: {new_names} (before: {before})"
    shown = _exp_params(repo)
    swept = {shown[n]["loss"]["name"]: shown[n]["train"]["epochs"] for n in new_names}
    assert swept == {"mnrl": 2, "cosent": 2}, shown

    runs = repo.mlflow_runs()
    assert len(runs) == 4, (
        f"expected 4 MLflow runs in {repo.root / 'mlflow.db'}, got "
        f"{[r.info.run_name for r in runs]}; queue logs:\n{_queue_logs(repo)}"
    )
    new = [r for r in runs if r.info.run_id not in (repo.first_run_id, repo.exp_run_id)]
    assert {r.data.params.get("loss.name") for r in new} == {"mnrl", "cosent"}
    assert {r.data.tags.get("dvc_exp_name") for r in new} == new_names
    # Each run holds exactly its own experiment's params and metrics.
    metrics = _exp_params(repo, "metrics/eval.json")
    for run in new:
        name = run.data.tags["dvc_exp_name"]
        assert run.data.params["loss.name"] == shown[name]["loss"]["name"], (name, run.data)
        for stage in ("retrieve", "rerank"):
            for metric, value in metrics[name][stage].items():
                assert run.data.metrics[f"{stage}.{metric}"] == value, (name, stage, metric)
    artifacts_root = (repo.root / "mlartifacts").as_uri()
    head = _head(repo)
    for run in new:
        label = f"run {run.info.run_name}"
        assert run.data.params.get("train.epochs") == "2", (label, run.data.params)
        dev_curve = repo.history(run.info.run_id, "dev_ndcg_at_10")
        assert len({step for step, _ in dev_curve}) == 2, (label, dev_curve)
        assert run.data.tags.get("dvc_exp_baseline_rev") == head, (label, head, run.data.tags)
        assert run.data.tags.get("git_commit") == head, (label, head, run.data.tags)
        # Artifacts beside the shared store, not in the executor's temporary copy.
        assert run.info.artifact_uri.startswith(artifacts_root), (label, run.info.artifact_uri)
        local = Path(run.info.artifact_uri.removeprefix("file://"))
        assert (local / "eval.json").is_file(), (label, sorted(local.rglob("*")))

    # Every record was sent: none waits for `make sync` (tracking never fails a stage).
    pending = sorted((repo.root / ".irtune").rglob("*.json"))
    assert not pending, f"records that never reached the store: {pending}"
    # No second store was made anywhere in DVC's temporary copies.
    strays = [
        p
        for pattern in ("mlflow.db", "mlruns", "mlartifacts")
        for p in (repo.root / ".dvc").rglob(pattern)
    ]
    assert not strays, f"MLflow files inside .dvc/: {strays}"
    repo.passed.add("queue")


def test_compare_two_experiments_per_query(repo: E2ERepo) -> None:
    """`make compare` runs the evaluate stage's paired test between any two experiments,
    reading their per-query metrics through DVC, and names a side DVC cannot find."""
    repo.require("queue")
    shown = _exp_params(repo)
    by_loss = {
        shown[n]["loss"]["name"]: n
        for n in _exp_names(repo)
        if shown.get(n, {}).get("train", {}).get("epochs") == 2
    }
    a, b = by_loss["cosent"], by_loss["mnrl"]
    out = repo.run(
        "make", "--no-print-directory", "compare", f"A={a}", f"B={b}", "RUN=rerank",
        f"BIN={VENV_BIN}", "STAMP=",
    )  # fmt: skip
    rows = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| metric")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    metrics = _exp_params(repo, "metrics/eval.json")
    assert set(rows) == set(metrics[a]["rerank"]), out
    for metric, (value, base, delta, p, verdict) in rows.items():
        # Each side's mean is its own experiment's metric; the verdict follows p and delta.
        assert float(value) == pytest.approx(metrics[a]["rerank"][metric], abs=5e-5), out
        assert float(base) == pytest.approx(metrics[b]["rerank"][metric], abs=5e-5), out
        assert float(delta) == pytest.approx(float(value) - float(base), abs=2e-4), out
        expected = "no significant difference"
        if float(p) < 0.05:
            expected = "better" if float(delta) > 0 else "worse"
        assert verdict == expected, out
    missing = repo.run("python", "-m", "irtune.compare", a, "no-such-exp", check=False)
    assert "no-such-exp: cannot read" in missing, missing


def _tiny_sweep(repo: E2ERepo) -> Path:
    """A two-axis sweep whose members that use a missing cross-encoder fail in rerank."""
    good = repo.assets["cross_encoder"]
    missing = repo.root.parent / "no-such-cross-encoder"
    path = repo.root / "conf" / "sweep" / "tiny.yaml"
    path.write_text(
        "# @package _global_\n"
        "sweep:\n  name: tiny\n  baseline: train.epochs=1\n"
        "tracking:\n  experiment: irtune-sweep-tiny\n"
        "hydra:\n  sweeper:\n    params:\n"
        "      train.epochs: 1,2\n"
        f"      rerank.model: {good},{missing}\n",
        encoding="utf-8",
    )
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-q", "-m", "e2e: tiny sweep")
    return path


def _sweep_runs(repo: E2ERepo) -> tuple[list, list]:
    """(member runs, report runs) of the ``irtune-sweep-tiny`` experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("irtune-sweep-tiny")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    reports = [r for r in runs if r.data.tags.get("irtune.kind") == "sweep-report"]
    return [r for r in runs if r not in reports], reports


def test_named_sweep_survives_a_failed_member_and_reports(repo: E2ERepo) -> None:
    repo.require("queue")
    _tiny_sweep(repo)
    out = repo.run(
        "python", "-m", "irtune.sweep", "run", "tiny", "--jobs", "1", "--poll", "3", check=False
    )
    # 1. Four members; the two with the missing cross-encoder fail, the others still run.
    assert "2 of 4 members failed" in out, out[-OUTPUT_TAIL:]
    assert re.search(r"Sweep progress: 4/4 done \(2 failed\)", out), out[-OUTPUT_TAIL:]
    # Progress is shown while members run, not only at the end.
    assert re.search(r"Sweep progress: [0-3]/4 done .*running: tiny-", out), out[-OUTPUT_TAIL:]
    assert "no-such-cross-encoder" in out, "the failed members' logs were not shown"

    # 2. One MLflow run per successful member, tagged with the sweep, plus the report's run.
    members, reports = _sweep_runs(repo)
    assert len(members) == 2, [(r.info.run_name, r.data.tags) for r in members]
    assert {r.data.tags.get("sweep") for r in members} == {"tiny"}
    sweep_ids = {r.data.tags.get("sweep_id") for r in members}
    assert len(sweep_ids) == 1 and "" not in sweep_ids, sweep_ids
    sweep_id = sweep_ids.pop()
    assert {r.data.params["train.epochs"] for r in members} == {"1", "2"}
    assert {r.data.params["rerank.model"] for r in members} == {str(repo.assets["cross_encoder"])}
    for run in members:
        assert run.data.metrics["ndcg_at_10"] == run.data.metrics["rerank.ndcg_at_10"]
        assert run.info.run_name.startswith(f"tiny-{sweep_id}-"), run.info.run_name
    assert len(reports) == 1, [r.info.run_name for r in reports]

    # 3. The report: best first, tested against the epochs=1 member, failures listed, plots.
    folder = repo.root / "reports" / "tiny"
    summary = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    rows = summary["members"]
    assert [r["axes"]["train.epochs"] for r in rows] in (["1", "2"], ["2", "1"]), rows
    scores = [r["metrics"]["ndcg_at_10"] for r in rows]
    assert scores == sorted(scores, reverse=True), rows
    base = next(r for r in rows if r["axes"]["train.epochs"] == "1")
    assert base["vs_baseline"]["delta"] == 0 and base["vs_baseline"]["p_value"] == 1.0, base
    assert "train.epochs=1" in summary["baseline"], summary["baseline"]
    assert len(summary["failed"]) == 2, summary["failed"]
    md = (folder / "report.md").read_text(encoding="utf-8")
    for row in rows:
        assert f"`{row['name']}`" in md, md
    for name in summary["failed"]:
        assert name in md, md
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == [
        "dev_curves.png",
        "ndcg_at_10_by_rerank_model.png",
        "ndcg_at_10_by_train_epochs.png",
    ], pngs
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo.root / 'mlflow.db'}")
    logged = {a.path for a in client.list_artifacts(reports[0].info.run_id)}
    assert {"report.md", "report.json", "dev_curves.png"} <= logged, logged

    # 4. `make exps` keeps the columns that matter and drops the rest.
    shown = repo.run("make", "--no-print-directory", "exps", f"BIN={VENV_BIN}", "STAMP=")
    header = next(line for line in shown.splitlines() if "Experiment" in line)
    for column in ("loss.name", "train.epochs", "rerank.ndcg_at_10"):
        assert column in shown, f"`make exps` lacks {column}:\n{shown}"
    assert "index.hnsw_m" not in shown and "dataset.source" not in shown, header
    repo.passed.add("sweep")


ARTIFACTS = REPO / "test-artifacts"  # screenshots, kept for whoever reads the test run
BROWSER = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(repo: E2ERepo):
    """``mlflow server`` on 127.0.0.1 over the e2e repository's store."""
    import urllib.request

    port = _free_port()
    log_path = repo.root.parent / "mlflow-server.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{repo.root / 'mlflow.db'}"],
            cwd=repo.root, env=repo.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"mlflow server exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no answer:\n{log_path.read_text()[-4000:]}"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def browser():
    missing = [str(p) for p in (BROWSER, DRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed: `make browser` installs Debian's "
            "chromium and chromium-driver (apt-get, as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(BROWSER)
    # Headless, and nothing that phones home: this machine's network is closed.
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _ui_number(value: float) -> str:
    """How MLflow's compare view prints a metric: rounded to 3 decimals, as JavaScript."""
    rounded = round(value, 3)
    return str(int(rounded)) if rounded == int(rounded) else repr(rounded)


def test_mlflow_ui_shows_the_sweep_in_a_real_browser(repo: E2ERepo, mlflow_server, browser):
    repo.require("sweep")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    members, reports = _sweep_runs(repo)
    experiment_id = members[0].info.experiment_id
    ARTIFACTS.mkdir(exist_ok=True)

    def page_text() -> str:
        return browser.find_element(By.TAG_NAME, "body").text

    def wait_for(texts: list[str], shot: str) -> str:
        try:
            WebDriverWait(browser, 90).until(lambda _: all(t in page_text() for t in texts))
        finally:
            browser.save_screenshot(str(ARTIFACTS / shot))
        return page_text()

    # 1. The experiment's runs table lists every member and the report.
    browser.get(f"{mlflow_server}/#/experiments/{experiment_id}/runs")
    names = [r.info.run_name for r in members + reports]
    wait_for(names, "mlflow-sweep-runs.png")

    # 2. The compare view puts the members side by side, with their ndcg_at_10.
    ids = json.dumps([r.info.run_id for r in members]).replace(" ", "")
    browser.get(f'{mlflow_server}/#/compare-runs?runs={ids}&experiments=["{experiment_id}"]')
    text = wait_for(["ndcg_at_10", "train.epochs"], "mlflow-sweep-compare.png")
    for run in members:
        assert run.info.run_name in text, f"{run.info.run_name} not in the compare view"
    metrics_part = text[text.rfind("Metrics") :]
    for run in members:
        shown = _ui_number(run.data.metrics["ndcg_at_10"])
        assert shown in metrics_part, (
            f"{run.info.run_name}'s ndcg_at_10 {shown} not in the compare view's metrics; "
            f"screenshot: {ARTIFACTS / 'mlflow-sweep-compare.png'}"
        )
