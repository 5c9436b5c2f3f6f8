"""End-to-end: the real pipeline, with the real DVC, Hydra, Sentence Transformers, Faiss and
MLflow, in a throwaway git repository built from this checkout.

The phases run in file order and share one repository (module-scoped fixture):

1. ``dvc repro`` runs every stage of dvc.yaml (download ... evaluate), writes sane metrics
   and logs one MLflow run; a second ``dvc repro`` reruns nothing.
2. ``dvc exp run -S loss=cosent`` (a workspace experiment) logs a second run.
3. A queued two-experiment sweep, run by a ``dvc queue`` worker in DVC's temporary copies,
   logs two more runs -- into the *same* store as the workspace runs.
4. ``make compare`` tests those two experiments against each other per query, and
   ``dvc plots diff`` draws their loss curves, dev curves and per-query deltas together.
5. A named sweep (``python -m irtune.sweep run``) survives its failing members and writes
   its report; the MLflow UI shows it in a real browser.
6. ``make regress`` runs a results file's rows as experiments, then checks them: OK for the
   values a real run measured, FAIL for a wrong one, for params that differ, and a rerun.

A phase is skipped when the one before it failed, so a failure is reported once.
No mocks: every command is a subprocess, exactly as a user would type it. The repository,
the queue, the server and the browser are set up in ``conftest.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from e2e_repo import ARTIFACTS, OUTPUT_TAIL, VENV_BIN, E2ERepo, compare_rows, stop_queue

from irtune.tracking import MODEL_URI_TAG
from irtune.workspace import run_captured

pytestmark = pytest.mark.e2e

STAGES = ("download", "prepare", "train", "encode", "index", "retrieve", "rerank", "evaluate")
METRICS = ("ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100")
QUEUE_TIMEOUT_S = 20 * 60


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


def test_repro_runs_all_stages_and_logs_one_run(repo: E2ERepo) -> None:
    dvc_yaml = yaml.safe_load((repo.root / "dvc.yaml").read_text(encoding="utf-8"))
    stages = list(dvc_yaml["stages"])
    assert set(STAGES) <= set(stages), f"dvc.yaml lost stages: {set(STAGES) - set(stages)}"
    before = time.time()
    out = repo.dvc("repro")
    after = time.time()
    missing = [s for s in stages if f"Running stage '{s}'" not in out]
    assert not missing, f"stages not run by `dvc repro`: {missing}; output:\n{out[-OUTPUT_TAIL:]}"
    # Every stage ran this repository's library, not the one the editable install names.
    library = repo.root.resolve() / "src" / "irtune"
    ran = re.findall(r"(\w+): irtune \S+ from (\S+)", out)
    assert sorted(s for s, _ in ran) == sorted(stages), ran
    assert {where for _, where in ran} == {str(library)}, ran
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
        "loss.name": "gist",  # the default recipe's
        "dataset.source": str(repo.assets["beir"]),
        "model.base": str(repo.assets["bi_encoder"]),
        "rerank.top_k": "20",
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
    assert tags["git_commit"] == repo.head(), "git_commit is not the commit the run was made on"
    assert tags.get("dataset") == "tiny", tags
    assert tags.get("base_model") == str(repo.assets["bi_encoder"]), tags
    assert run.info.status == "FINISHED", run.info
    # MLflow's own columns: Source, Version, User, Dataset, and a Duration that is the
    # pipeline's (from `dvc repro`'s start), not the evaluate stage's logging.
    assert tags["mlflow.source.git.commit"] == repo.head(), tags
    assert tags["mlflow.source.name"] == str(repo.root.resolve() / "dvc.yaml"), tags
    assert "mlflow.user" in tags, tags
    # (A process's start time is known to about a second: the kernel's boot time is whole.)
    assert before - 2 <= run.info.start_time / 1000 < before + 30, (before, run.info.start_time)
    evaluated = (repo.root / "metrics" / "eval.json").stat().st_mtime  # written just before
    assert evaluated <= run.info.end_time / 1000 <= after, (evaluated, after, run.info.end_time)
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["tiny"], run.inputs
    assert tags[MODEL_URI_TAG].startswith("models:/"), tags

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

    shown = repo.exp_data()
    cosent = [name for name, p in shown.items() if p.get("loss", {}).get("name") == "cosent"]
    assert len(cosent) == 1, f"`dvc exp show --json` experiments and params: {shown}"
    assert cosent[0] in repo.exp_names()

    runs = repo.mlflow_runs()
    assert len(runs) == 2, f"expected 2 MLflow runs, got {[r.info.run_name for r in runs]}"
    new = [r for r in runs if r.info.run_id != repo.first_run_id]
    assert len(new) == 1, [r.info.run_id for r in runs]
    run = new[0]
    assert run.data.params.get("loss.name") == "cosent", run.data.params
    assert run.data.tags.get("dvc_exp_name") == cosent[0], run.data.tags
    head = repo.head()
    assert run.data.tags.get("dvc_exp_baseline_rev") == head, (head, run.data.tags)
    assert run.data.tags.get("git_commit") == head, (head, run.data.tags)
    assert run.data.metrics["rerank.ndcg_at_10"] == pytest.approx(metrics["rerank"]["ndcg_at_10"])
    # `make register EXP=<name>`: the experiment's bi-encoder becomes a model version.
    out = repo.run(
        "make", "-s", "register", f"EXP={cosent[0]}", "NAME=tiny-e2e", f"BIN={VENV_BIN}", "STAMP="
    )
    assert "Registered tiny-e2e version 1" in out, out
    repo.exp_run_id = run.info.run_id
    repo.passed.add("exp_run")


def test_queued_sweep_lands_in_the_same_store(repo: E2ERepo) -> None:
    repo.require("exp_run")
    before = repo.exp_names()
    repo.dvc("exp", "run", "--queue", "-S", "loss=mnrl,cosent", "-S", "train.epochs=2")
    out, counts = repo.queue_table()
    assert counts.get("Queued") == 2, f"expected 2 queued experiments:\n{out}"

    # Two workers: the experiments run in parallel and must not mix their tracking.
    counts = _run_queue(repo, jobs=2)
    assert counts.get("Success") == 2 and not counts.get("Failed"), repo.queue_logs()

    new_names = repo.exp_names() - before
    assert len(new_names) == 2, f"new experiments: {new_names} (before: {before})"
    # Each queued experiment ran the library of its own temporary copy of the repository:
    # the files its dvc.lock hashes, whatever happens to the workspace meanwhile.
    copies = repo.root.resolve() / ".dvc" / "tmp" / "exps"
    for name in new_names:
        log = repo.dvc("queue", "logs", name)
        ran = set(re.findall(r"train: irtune \S+ from (\S+)", log))
        assert len(ran) == 1, (name, ran, log[-OUTPUT_TAIL:])
        where = Path(ran.pop())
        assert where.is_relative_to(copies) and where.parts[-2:] == ("src", "irtune"), where
    shown = repo.exp_data()
    swept = {shown[n]["loss"]["name"]: shown[n]["train"]["epochs"] for n in new_names}
    assert swept == {"mnrl": 2, "cosent": 2}, shown

    runs = repo.mlflow_runs()
    assert len(runs) == 4, (
        f"expected 4 MLflow runs in {repo.root / 'mlflow.db'}, got "
        f"{[r.info.run_name for r in runs]}; queue logs:\n{repo.queue_logs()}"
    )
    new = [r for r in runs if r.info.run_id not in (repo.first_run_id, repo.exp_run_id)]
    assert {r.data.params.get("loss.name") for r in new} == {"mnrl", "cosent"}
    assert {r.data.tags.get("dvc_exp_name") for r in new} == new_names
    # Each run holds exactly its own experiment's params and metrics.
    metrics = repo.exp_data("metrics/eval.json")
    for run in new:
        name = run.data.tags["dvc_exp_name"]
        assert run.data.params["loss.name"] == shown[name]["loss"]["name"], (name, run.data)
        for stage in ("retrieve", "rerank"):
            for metric, value in metrics[name][stage].items():
                assert run.data.metrics[f"{stage}.{metric}"] == value, (name, stage, metric)
    artifacts_root = (repo.root / "mlartifacts").as_uri()
    head = repo.head()
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


def _run_queue(repo: E2ERepo, jobs: int) -> dict[str, int]:
    """Start ``jobs`` queue workers and wait until nothing is queued or running; returns the
    count of tasks per status."""
    repo.dvc("queue", "start", "-j", str(jobs))
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        _, counts = repo.queue_table()
        if not counts.get("Queued") and not counts.get("Running"):
            return counts
        if time.monotonic() > deadline:
            pytest.fail(f"queue not done after {QUEUE_TIMEOUT_S}s:\n{repo.queue_logs()}")
        time.sleep(10)  # each `dvc queue status` costs seconds of CPU the worker needs


def test_queued_experiments_land_on_the_team_server(
    repo: E2ERepo, request: pytest.FixtureRequest
) -> None:
    """The queued sweep's two recipes again, logged by two parallel queue workers to the
    team's server (PostgreSQL, basic auth) with the credentials in MLflow's variables of the
    shell that started the workers: both runs land there, complete, and nothing waits in
    the spool. Only evaluate runs (tracking.* are its params; the rest is DVC's run cache),
    and the password reaches no DVC file."""
    repo.require("queue")
    server = request.getfixturevalue("team_server")  # skips, saying why, where none runs
    experiment = "irtune-e2e-team"
    stop_queue(repo)  # the next workers start with the credentials
    before = repo.exp_names()
    tracked = ["-S", f"tracking.uri={server.url}", "-S", f"tracking.experiment={experiment}"]
    repo.dvc("exp", "run", "--queue", "-S", "loss=mnrl,cosent", "-S", "train.epochs=2", *tracked)
    plain = repo.env
    repo.env = plain | {
        "MLFLOW_TRACKING_USERNAME": server.admin,
        "MLFLOW_TRACKING_PASSWORD": server.password,
    }
    try:
        counts = _run_queue(repo, jobs=2)
    finally:
        stop_queue(repo)
        repo.env = plain
    # The queued sweep's two, and these two.
    assert counts.get("Success") == 4 and not counts.get("Failed"), repo.queue_logs()
    new_names = repo.exp_names() - before
    assert len(new_names) == 2, new_names
    for name in new_names:
        log = repo.dvc("queue", "logs", name)
        assert "Running stage 'evaluate'" in log and "Running stage 'train'" not in log, log

    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = server.admin
    os.environ["MLFLOW_TRACKING_PASSWORD"] = server.password
    try:
        client = MlflowClient(tracking_uri=server.url)
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id]) if found else []
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    assert {r.data.tags.get("dvc_exp_name") for r in runs} == new_names, runs
    assert {r.data.params["loss.name"] for r in runs} == {"mnrl", "cosent"}
    metrics = repo.exp_data("metrics/eval.json")
    for run in runs:
        name = run.data.tags["dvc_exp_name"]
        assert run.data.metrics["ndcg_at_10"] == metrics[name]["rerank"]["ndcg_at_10"], name
        assert run.data.tags[MODEL_URI_TAG].startswith("models:/"), run.data.tags
    pending = sorted((repo.root / ".irtune").rglob("*.json"))
    assert not pending, f"records that never reached the server: {pending}"
    shown = repo.dvc("exp", "show", "--json")
    assert server.password not in shown, "the password is in DVC's experiments"


def _queued_pair(repo: E2ERepo) -> tuple[str, str]:
    """The names of the queued sweep's two experiments: (cosent's, mnrl's)."""
    shown = repo.exp_data()
    by_loss = {
        shown[n]["loss"]["name"]: n
        for n in repo.exp_names()
        if shown.get(n, {}).get("train", {}).get("epochs") == 2
    }
    return by_loss["cosent"], by_loss["mnrl"]


def test_compare_two_experiments_per_query(repo: E2ERepo) -> None:
    """`make compare` runs the evaluate stage's paired test between any two experiments,
    reading their per-query metrics through DVC, and names a side DVC cannot find."""
    repo.require("queue")
    a, b = _queued_pair(repo)
    out = repo.run(
        "make", "--no-print-directory", "compare", f"A={a}", f"B={b}", "RUN=rerank",
        f"BIN={VENV_BIN}", "STAMP=",
    )  # fmt: skip
    rows = compare_rows(out)
    metrics = repo.exp_data("metrics/eval.json")
    assert set(rows) == set(metrics[a]["rerank"]), out
    assert "paired randomization test" in out, out
    for metric, (value, base, delta, ci, p, verdict) in rows.items():
        # Each side's mean is its own experiment's metric; the verdict follows p and delta.
        assert float(value) == pytest.approx(metrics[a]["rerank"][metric], abs=5e-5), out
        assert float(base) == pytest.approx(metrics[b]["rerank"][metric], abs=5e-5), out
        assert float(delta) == pytest.approx(float(value) - float(base), abs=2e-4), out
        low, high = (float(x) for x in ci.strip("[]").split(","))
        assert low <= float(delta) + 1e-4 and float(delta) - 1e-4 <= high, out
        expected = "no significant difference"
        if float(p) < 0.05:
            expected = "better" if float(delta) > 0 else "worse"
        assert verdict == expected, out
    missing = repo.run("python", "-m", "irtune.compare", a, "no-such-exp", check=False)
    assert "no-such-exp: cannot read" in missing, missing


def test_plots_show_and_diff_two_experiments(repo: E2ERepo) -> None:
    """dvc.yaml's plots render as DVC users expect: `dvc plots show` draws the workspace's
    three, and `dvc plots diff <exp-a> <exp-b>` lays the two queued experiments' loss
    curves, dev curves and per-query deltas over each other, as JSON (what VS Code's DVC
    extension reads) and as an HTML page."""
    repo.require("queue")
    dvc_yaml = yaml.safe_load((repo.root / "dvc.yaml").read_text(encoding="utf-8"))
    plots = sorted(
        next(iter(p)) if isinstance(p, dict) else p
        for stage in dvc_yaml["stages"].values()
        for p in stage.get("plots", [])
    )
    assert plots == [
        "plots/dev_curve.json",
        "plots/per_query_delta.json",
        "plots/train_loss.json",
    ], plots
    page = repo.root.parent / "plots-show"
    repo.dvc("plots", "show", "-o", str(page))
    html = (page / "index.html").read_text(encoding="utf-8")
    for title in ("Training loss", "Dev NDCG@10 at each epoch end", "per test query"):
        assert title in html, f"`dvc plots show` has no {title!r} plot: {page / 'index.html'}"

    a, b = _queued_pair(repo)
    diff = json.loads(repo.dvc("plots", "diff", a, b, "--json"))
    assert not diff.get("errors"), diff["errors"]
    for path in plots:
        (rendered,) = diff["data"][path]
        assert rendered["revisions"] == [a, b], (path, rendered["revisions"])
        values = rendered["content"]["data"]["values"]
        for rev in (a, b):
            assert any(v["rev"] == rev for v in values), f"{path}: no points of {rev}"
    # The per-query delta: every test query once per experiment, on the same rank axis.
    deltas = diff["data"]["plots/per_query_delta.json"][0]["content"]["data"]["values"]
    ranks = {rev: sorted(v["rank"] for v in deltas if v["rev"] == rev) for rev in (a, b)}
    assert ranks[a] == ranks[b] == list(range(1, len(ranks[a]) + 1)), ranks
    page = repo.root.parent / "plots-diff"
    repo.dvc("plots", "diff", a, b, "-o", str(page))
    html = (page / "index.html").read_text(encoding="utf-8")
    assert a in html and b in html, f"{page / 'index.html'} does not name both experiments"
    repo.passed.add("plots")


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
    """(member runs, parent runs: the sweep's and any recipe's) of ``irtune-sweep-tiny``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("irtune-sweep-tiny")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    reports = [r for r in runs if r.data.tags.get("irtune.kind") in ("sweep", "recipe")]
    return [r for r in runs if r not in reports], reports


# A queued named sweep of several members, ~2 min; tests/test_sweep.py checks its report.
@pytest.mark.slow
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

    # 2. One MLflow run per successful member, tagged with the sweep, each a child of the
    #    sweep's parent run (one seed each: no recipe parents).
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
    assert reports[0].data.tags["irtune.kind"] == "sweep", reports[0].data.tags
    assert reports[0].info.run_name == f"tiny-{sweep_id}", reports[0].info.run_name
    parents = {r.data.tags.get("mlflow.parentRunId") for r in members}
    assert parents == {reports[0].info.run_id}, parents

    # 3. The report: recipes best first, tested against epochs=1, failures listed, plots.
    folder = repo.root / "reports" / "tiny"
    summary = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    rows = summary["recipes"]
    assert [r["axes"]["train.epochs"] for r in rows] in (["1", "2"], ["2", "1"]), rows
    scores = [r["metrics"]["ndcg_at_10"]["mean"] for r in rows]
    assert scores == sorted(scores, reverse=True), rows
    base = next(r for r in rows if r["axes"]["train.epochs"] == "1")
    assert base["verdict"] == "(baseline)", base
    assert base["vs_baseline"]["ndcg_at_10"]["delta"] == 0, base
    other = next(r for r in rows if r is not base)["vs_baseline"]["ndcg_at_10"]
    assert other["ci_low"] <= other["delta"] <= other["ci_high"], other
    assert other["p_value"] <= other["p_adjusted"] and other["correction"] == "holm", other
    assert "train.epochs=1" in summary["baseline"], summary["baseline"]
    assert summary["method"]["test"] == "permutation", summary["method"]
    assert len(summary["failed"]) == 2, summary["failed"]
    md = (folder / "report.md").read_text(encoding="utf-8")
    for member in summary["members"]:
        assert f"`{member['name']}`" in md, md
    for name in summary["failed"]:
        assert name in md, md
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == [
        "delta_ndcg_at_10.png",
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


#: The compare view's row of metric ``arguments[0]`` as its cells' texts, or null after
#: scrolling the view's grids by ``arguments[1]`` px (0: back to the top). The metric table
#: is a react-virtualized MultiGrid that renders only the rows near its scroll position (a
#: run logs some 80 metrics), so a row is found by scrolling the grid that scrolls.
_METRIC_ROW_JS = """
const [name, step] = arguments;
const own = e => [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent)
  .join('').trim();
const cell = e => e.closest('.ReactVirtualized__Grid__innerScrollContainer > *');
const named = [...document.querySelectorAll('.ReactVirtualized__Grid *')]
  .find(e => own(e) === name);
if (named && step) {
  const top = cell(named).style.top;
  const table = named.closest('.ReactVirtualized__Grid').parentElement.parentElement;
  const row = [...table.querySelectorAll('.ReactVirtualized__Grid *')]
    .filter(e => own(e) && cell(e).style.top === top).map(own);
  if (row.length > 1) return row;
}
for (const g of document.querySelectorAll('.ReactVirtualized__Grid')) {
  if (getComputedStyle(g).overflowY !== 'auto') continue;
  g.scrollTop = step ? g.scrollTop + step : 0;
}
return null;
"""


def _metric_row(browser, metric: str) -> list[str]:
    """The cells of the compare view's row of ``metric``: its name, then each run's value."""
    browser.execute_script(_METRIC_ROW_JS, metric, 0)
    for _ in range(100):
        time.sleep(0.2)
        row = browser.execute_script(_METRIC_ROW_JS, metric, 100)
        if row:
            return row
    return []


def _ui_number(value: float) -> str:
    """How MLflow's compare view prints a metric: rounded to 3 decimals, as JavaScript."""
    rounded = round(value, 3)
    return str(int(rounded)) if rounded == int(rounded) else repr(rounded)


@pytest.mark.slow  # needs the named sweep's runs
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

    # 1. The experiment's runs table lists the sweep's parent run (its members are nested
    #    under it, MLflow's convention for sweeps).
    browser.get(f"{mlflow_server}/#/experiments/{experiment_id}/runs")
    wait_for([r.info.run_name for r in reports], "mlflow-sweep-runs.png")

    # 2. The compare view puts the members side by side, with their ndcg_at_10.
    ids = json.dumps([r.info.run_id for r in members]).replace(" ", "")
    browser.get(f'{mlflow_server}/#/compare-runs?runs={ids}&experiments=["{experiment_id}"]')
    text = wait_for(["ndcg_at_10", "train.epochs"], "mlflow-sweep-compare.png")
    for run in members:
        assert run.info.run_name in text, f"{run.info.run_name} not in the compare view"
    row = _metric_row(browser, "ndcg_at_10")
    for run in members:
        shown = _ui_number(run.data.metrics["ndcg_at_10"])
        assert shown in row[1:], (
            f"{run.info.run_name}'s ndcg_at_10 {shown} not in the compare view's ndcg_at_10 "
            f"row {row}; screenshot: {ARTIFACTS / 'mlflow-sweep-compare.png'}"
        )


@pytest.mark.slow  # three pipeline runs, ~90 s; tests/test_regress.py checks the comparison
def test_regress_checks_a_results_file_on_the_tiny_fixture(repo: E2ERepo) -> None:
    """`make regress` on a results file of the tiny dataset: it runs a row that has no
    experiment yet and prints what it measured; with that measurement (read back through
    `dvc exp show`) as the row's expectation it reads the experiment and says OK, and a row
    expecting 0.05 more says FAIL, as do params that are not the row's; RERUN=1 runs the row
    again with every stage forced."""
    repo.require("repro")
    row, off = "tiny-zero-shot", "tiny-zero-shot-off"
    results = repo.root / "tiny-results.yaml"

    def regress(*args: str) -> tuple[int, str]:
        result = run_captured(
            ["make", "--no-print-directory", "regress", "RESULTS_FILE=tiny-results.yaml",
             *args, f"BIN={VENV_BIN}", "STAMP="],
            cwd=repo.root, env=repo.env, timeout=1800,
        )  # fmt: skip
        print(f"[e2e] make regress {' '.join(args)}: exit {result.returncode}", flush=True)
        return result.returncode, result.output

    def line(out: str, name: str, metric: str) -> list[str]:
        found = [ln.split() for ln in out.splitlines() if ln.split()[:2] == [name, metric]]
        assert len(found) == 1, f"no line for {name} {metric}:\n{out[-OUTPUT_TAIL:]}"
        return found[0]

    # 1. A row expecting nothing yet, with no experiment: it is run, and reports NEW.
    results.write_text(
        f"rows:\n  - {{name: {row}, dataset: tiny, overrides: [train.epochs=0]}}\n",
        encoding="utf-8",
    )
    status, out = regress(f"ROW={row}")
    assert status == 0, out[-OUTPUT_TAIL:]
    assert f"dvc exp run -n {row} -S dataset=tiny -S train.epochs=0" in out, out[-OUTPUT_TAIL:]
    assert row in repo.exp_names()
    measured = repo.exp_data("metrics/eval.json")[row]["retrieve"]
    assert set(measured) == set(METRICS), measured
    for metric, value in measured.items():
        assert line(out, row, metric)[2:] == ["-", f"{value:.4f}", "-", "-", "NEW", "nothing",
                                              "expected", "yet"]  # fmt: skip

    # 2. What the run measured becomes the row's expectation: read, not rerun, and OK. A row
    #    expecting 0.05 more NDCG@10 has no experiment: it runs (from DVC's run cache) and FAILs.
    expected = ", ".join(f"{m}: {v}" for m, v in measured.items())
    wrong = round(measured["ndcg_at_10"] + 0.05, 6)
    recipe = "dataset: tiny, overrides: [train.epochs=0]"
    results.write_text(
        "tolerance: 0.0001\nrows:\n"
        f"  - {{name: {row}, {recipe}, expected: {{{expected}}}}}\n"
        f"  - {{name: {off}, {recipe}, expected: {{ndcg_at_10: {wrong}}}}}\n",
        encoding="utf-8",
    )
    status, out = regress()
    assert status != 0, out[-OUTPUT_TAIL:]
    assert f"{row}: read experiment" in out and f"dvc exp run -n {row} " not in out, out
    for metric, value in measured.items():
        assert line(out, row, metric)[2:] == [f"{value:.4f}", f"{value:.4f}", "+0.0000", "0.0001",
                                              "OK"]  # fmt: skip
    assert line(out, off, "ndcg_at_10")[2:] == [f"{wrong:.4f}", f"{measured['ndcg_at_10']:.4f}",
                                                "-0.0500", "0.0001", "FAIL"]  # fmt: skip
    assert f"4 OK, 1 FAIL; failed: {off}" in out, out[-OUTPUT_TAIL:]

    # 3. An experiment whose params are not the row's (with these OVERRIDES) fails on params.
    status, out = regress(f"ROW={row}", "OVERRIDES=retrieve.top_k=10")
    assert status != 0
    params = line(out, row, "params")
    assert params[6] == "FAIL" and "retrieve.top_k: 20 (experiment) vs 10 (row)" in " ".join(
        params
    ), out[-OUTPUT_TAIL:]

    # 4. RERUN=1: every stage of the row again (dvc exp run -f), the same figures.
    status, out = regress(f"ROW={row}", "RERUN=1")
    assert status == 0, out[-OUTPUT_TAIL:]
    assert f"dvc exp run -n {row} -f" in out and "Running stage 'baseline'" in out, out
    assert out.rstrip().splitlines()[-1] == "4 OK", out[-OUTPUT_TAIL:]
