"""Named sweeps and their report, without DVC's queue (tests/test_e2e.py runs that).

Sweep files are read and expanded as ``make sweep`` does; the report is built from runs
logged to a real SQLite MLflow store by :func:`irtune.tracking.log_record`, the evaluate
stage's own logging path, with per-query metrics made up so that the expected ranking and
significance are known.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import statistics
import time
from pathlib import Path

import pytest
from harness import REPO

from irtune import tracking
from irtune.config import Config
from irtune.errors import ConfigError
from irtune.evaluate import ZERO_SHOT
from irtune.sweep.definition import load_sweep, members, validate_members
from irtune.sweep.report import PARENT_TAG, RECIPE_TAG, REPORT_KIND_TAG, write_report

SWEEPS = sorted(p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the module's tests (each sweep has its own experiment):
    creating a store costs seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str) -> Path:
    """A repository root with this checkout's conf/, as the cwd; runs go to ``store``."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tmp_path


def _write_sweep(root: Path, name: str, axes: dict[str, str], baseline: str = "") -> None:
    lines = ["# @package _global_", "sweep:", f"  name: {name}", f"  baseline: '{baseline}'"]
    lines += ["tracking:", f"  experiment: irtune-sweep-{name}"]
    lines += ["hydra:", "  sweeper:", "    params:"] + [f"      {k}: {v}" for k, v in axes.items()]
    (root / "conf" / "sweep" / f"{name}.yaml").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", SWEEPS)
def test_every_committed_sweep_expands_to_valid_members(name: str) -> None:
    sweep = load_sweep(name, REPO)
    all_members = members(sweep, [f"sweep={name}", "sweep.id=test"])
    expected = 1
    for values in sweep.axes.values():
        expected *= len(values.split(","))
    assert len(all_members) == expected
    assert len({tuple(m) for m in all_members}) == expected, "duplicate members"
    validate_members(all_members, REPO)


def test_members_are_the_product_in_dvcs_order(root: Path) -> None:
    _write_sweep(root, "two", {"loss": "mnrl,gist", "train.batch_size": "16,32"})
    got = members(load_sweep("two"), ["sweep=two"])
    assert [m[1:] for m in got] == [
        ["loss=mnrl", "train.batch_size=16"],
        ["loss=mnrl", "train.batch_size=32"],
        ["loss=gist", "train.batch_size=16"],
        ["loss=gist", "train.batch_size=32"],
    ]


def test_a_missing_sweep_lists_the_sweeps_there_are(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such sweep; there are: .*losses"):
        load_sweep("nope")


def test_a_sweep_without_axes_or_with_another_name_fails(root: Path) -> None:
    path = root / "conf" / "sweep" / "empty.yaml"
    path.write_text("# @package _global_\nsweep:\n  name: empty\n")
    with pytest.raises(ConfigError, match=r"empty.yaml: 'hydra.sweeper.params' lists no axes"):
        load_sweep("empty")
    _write_sweep(root, "other", {"loss": "mnrl"})
    path = root / "conf" / "sweep" / "renamed.yaml"
    path.write_text((root / "conf" / "sweep" / "other.yaml").read_text())
    with pytest.raises(ConfigError, match=r"'sweep.name' must be 'renamed'"):
        load_sweep("renamed")


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"train.batch_size": "16,abc"}, r"train.batch_size=abc.*train.batch_size"),
        ({"train.batch_size": "16,0"}, r"train.batch_size=0.*'train.batch_size' must be > 0"),
        ({"loss": "mnrl,nosuch"}, r"loss=nosuch.*nosuch"),
    ],
)
def test_a_bad_member_fails_before_anything_is_queued(
    root: Path, axes: dict[str, str], message: str
) -> None:
    _write_sweep(root, "bad", axes)
    all_members = members(load_sweep("bad"), ["sweep=bad"])
    with pytest.raises(ConfigError, match=message):
        validate_members(all_members)


def _log_member(
    cfg: Config, name: str, per_query: dict, root: Path, zero_shot: dict | None = None
) -> str:
    """Log one member's run as the evaluate stage does (record -> log_record)."""
    mean = {m: sum(q[m] for q in per_query.values()) / len(per_query) for m in _METRICS}
    folder = root / "members" / name
    folder.mkdir(parents=True)
    runs = {"retrieve": per_query, "rerank": per_query}
    runs |= {ZERO_SHOT: zero_shot} if zero_shot is not None else {}
    (folder / "per_query.json").write_text(json.dumps(runs))
    history = {"summary": {"steps": 3}, "loss_curve": [], "dev_curve": [
        {"step": 3, "epoch": 1.0, "dev_ndcg_at_10": mean["ndcg_at_10"] - 0.01},
        {"step": 6, "epoch": 2.0, "dev_ndcg_at_10": mean["ndcg_at_10"]},
    ]}  # fmt: skip
    record = tracking.build_record(
        cfg, {"retrieve": mean, "rerank": mean}, {}, history, [folder / "per_query.json"]
    )
    record["run_name"] = name
    # Logged one after another, as pipelines start: built in this one process, every record
    # would otherwise start when pytest did (tracking.pipeline_start).
    record["start_time"] = record["end_time"] = next(_CLOCK)
    return tracking.log_record(record, cfg.tracking)


#: Start times of the members _log_member logs, one millisecond apart, in logging order.
_CLOCK = itertools.count(int(time.time() * 1000))


_METRICS = ("ndcg_at_10", "recall_at_100", "mrr_at_10")


def _shifted(base: dict, rng: random.Random, shift: float, noise: float) -> dict:
    """``base`` moved by ``shift`` plus uniform noise of width ``noise`` on every query."""
    return {
        q: {m: v + shift + rng.uniform(-noise, noise) for m, v in s.items()}
        for q, s in base.items()
    }


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()  # $MLFLOW_TRACKING_URI: the module's store


def _runs_by_kind(experiment: str) -> dict[str, list]:
    """The experiment's runs: ``sweep`` and ``recipe`` parents, and ``member`` runs."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    out: dict[str, list] = {"sweep": [], "recipe": [], "member": []}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        out[run.data.tags.get(REPORT_KIND_TAG, "member")].append(run)
    return out


def test_report_ranks_recipes_and_tests_them_against_the_baseline_recipe(root: Path) -> None:
    """A sweep of one seed per member: each member is a recipe; the report ranks them, tests
    them against the baseline member, and says that one seed could not show agreement."""
    from irtune.sweep.definition import sweep_config

    _write_sweep(root, "lr", {"train.lr": "1e-5,2e-5,5e-5"}, baseline="train.lr=2e-05")
    cfg = sweep_config("lr")
    assert cfg.tracking.experiment == "irtune-sweep-lr" and cfg.sweep.name == "lr"
    # Per-query NDCG: 2e-5 is the baseline; 5e-5 beats it on every query (significant);
    # 1e-5 is the baseline plus noise (no significant difference).
    rng = random.Random(0)
    base = {f"q{i}": {m: rng.uniform(0.2, 0.6) for m in _METRICS} for i in range(40)}
    better = _shifted(base, rng, 0.055, 0.005)
    noisy = _shifted(base, rng, 0.0, 0.02)
    for sweep_id in ("old", "new"):  # the report takes the latest invocation
        for lr, per_query in (("1e-05", noisy), ("2e-05", base), ("5e-05", better)):
            cfg.train.lr = float(lr)
            cfg.sweep.id = sweep_id
            _log_member(cfg, f"lr-{sweep_id}-{lr}", per_query, root)

    out = write_report("lr", failed=["lr-new-4"])
    summary = json.loads((out / "report.json").read_text())
    assert summary["sweep_id"] == "new"
    assert summary["method"]["test"] == "permutation"
    assert summary["method"]["correction"] == "holm" and summary["method"]["family"] == 2
    recipes = summary["recipes"]
    assert recipes[0]["name"] == "train.lr=5e-05", recipes
    verdicts = {r["axes"]["train.lr"]: r["verdict"] for r in recipes}
    assert verdicts == {
        "5e-05": "better (1 seed)",
        "2e-05": "(baseline)",
        "1e-05": "no significant difference",
    }, verdicts
    top = recipes[0]["vs_baseline"]["ndcg_at_10"]
    assert top["ci_low"] <= top["delta"] <= top["ci_high"] and top["ci_low"] > 0
    assert top["p_value"] <= top["p_adjusted"] < 0.05
    # Dev curves by epoch: logged at steps 3 and 6 of a 3-steps-per-epoch schedule.
    assert [p[0] for p in recipes[0]["dev_curve"]] == [1.0, 2.0]
    scores = [r["metrics"]["ndcg_at_10"]["mean"] for r in recipes]
    assert scores == sorted(scores, reverse=True)
    assert all(r["metrics"]["ndcg_at_10"]["sd"] is None for r in recipes)  # one seed each
    md = (out / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| `lr-new")]
    assert [r.split("|")[1].strip(" `") for r in rows] == [
        "lr-new-5e-05", "lr-new-1e-05", "lr-new-2e-05"
    ] or [r.split("|")[1].strip(" `") for r in rows] == [
        "lr-new-5e-05", "lr-new-2e-05", "lr-new-1e-05"
    ], md  # fmt: skip
    assert "lr-new-4" in md and "against recipe `train.lr=2e-05`" in md
    assert "Holm" in md and "randomization test" in md
    assert sorted(p.name for p in out.glob("*.png")) == [
        "delta_ndcg_at_10.png",
        "dev_curves.png",
        "ndcg_at_10_by_train_lr.png",
    ]

    # MLflow: the sweep is a parent run holding the report, each member its child, and the
    # one-seed recipes' verdicts are logged on their members' runs.
    write_report("lr")  # written again: the same parent run
    runs = _runs_by_kind("irtune-sweep-lr")
    assert len(runs["sweep"]) == 1 and not runs["recipe"], runs
    parent = runs["sweep"][0]
    assert parent.info.run_name == "lr-new" and parent.data.tags["best_recipe"] == "train.lr=5e-05"
    assert {a.path for a in _client().list_artifacts(parent.info.run_id)} >= {
        "report.md", "report.json", "dev_curves.png", "delta_ndcg_at_10.png"
    }  # fmt: skip
    new = [r for r in runs["member"] if r.data.tags["sweep_id"] == "new"]
    assert {r.data.tags.get(PARENT_TAG) for r in new} == {parent.info.run_id}
    old = [r for r in runs["member"] if r.data.tags["sweep_id"] == "old"]
    assert not any(PARENT_TAG in r.data.tags for r in old)
    best = next(r for r in new if r.info.run_name == "lr-new-5e-05")
    assert best.data.tags["verdict"] == "better (1 seed)"
    assert best.data.metrics["vs_baseline.ndcg_at_10_p_adjusted"] == top["p_adjusted"]


def test_report_groups_seeds_into_recipes_and_a_lucky_seed_wins_nothing(root: Path) -> None:
    """Three recipes x three training seeds, logged through the evaluate stage's logging.
    `lucky`: one seed gains 0.09 on every query, two lose 0.01, so its mean over seeds is
    significant but its seeds disagree; `steady`: every seed gains 0.02; against `base`.
    The report treats each recipe's replicates as one, and MLflow nests them."""
    from irtune.sweep.definition import sweep_config

    _write_sweep(root, "seeded", {"loss": "mnrl,gist,cached_mnrl"}, baseline="loss=mnrl")
    cfg = sweep_config("seeded")
    cfg.sweep.id = "s1"
    rng = random.Random(5)
    base = {f"q{i}": {m: rng.uniform(0.2, 0.6) for m in _METRICS} for i in range(40)}
    shifts = {"mnrl": (0.0, 0.0, 0.0), "gist": (0.09, -0.01, -0.01), "cached_mnrl": (0.02,) * 3}
    for loss, per_seed in shifts.items():
        for seed, shift in zip((42, 43, 44), per_seed, strict=True):
            cfg.loss.name, cfg.train.seed = loss, seed
            _log_member(cfg, f"seeded-s1-{loss}-{seed}", _shifted(base, rng, shift, 0.004), root)

    # The file now lists one loss more than the members ran (as when the command line
    # narrowed the axis): the report names what ran.
    _write_sweep(root, "seeded", {"loss": "mnrl,gist,cached_mnrl,cosent"}, baseline="loss=mnrl")
    out = write_report("seeded")
    summary = json.loads((out / "report.json").read_text())
    recipes = {r["axes"]["loss"]: r for r in summary["recipes"]}
    assert len(recipes) == 3 and len(summary["members"]) == 9
    assert {r["verdict"] for r in recipes.values()} == {"(baseline)", "better", "seeds disagree"}
    assert recipes["cached_mnrl"]["verdict"] == "better"
    lucky = recipes["gist"]["vs_baseline"]["ndcg_at_10"]
    assert lucky["verdict"] == "seeds disagree" and lucky["p_adjusted"] < 0.05
    assert lucky["seeds"] == 3 and [d > 0 for d in lucky["seed_deltas"]] == [True, False, False]
    assert recipes["gist"]["seeds"] == ["train.seed=42", "train.seed=43", "train.seed=44"]
    # Mean and sd over the seeds' own means; the tested value is the mean of the per-query
    # means over seeds, the same number.
    values = recipes["gist"]["metrics"]["ndcg_at_10"]["values"]
    assert recipes["gist"]["metrics"]["ndcg_at_10"]["mean"] == pytest.approx(sum(values) / 3)
    assert recipes["gist"]["metrics"]["ndcg_at_10"]["sd"] == pytest.approx(statistics.stdev(values))
    assert lucky["value"] == pytest.approx(sum(values) / 3, abs=1e-5)
    md = (out / "report.md").read_text()
    assert "3 recipes x 3 seed(s) = 9 members" in md and "cosent" not in md
    assert "`train.seed` = 42,43,44" in md
    row = next(line for line in md.splitlines() if line.startswith("| ") and "| gist |" in line)
    assert " ± " in row and "seeds disagree" in row and "| 3 |" in row, row

    # MLflow: sweep parent -> one recipe parent per recipe -> its three replicates; the
    # aggregates are on the recipe parent.
    runs = _runs_by_kind("irtune-sweep-seeded")
    assert len(runs["sweep"]) == 1 and len(runs["recipe"]) == 3 and len(runs["member"]) == 9
    parent = runs["sweep"][0].info.run_id
    by_recipe = {r.data.tags[RECIPE_TAG]: r for r in runs["recipe"]}
    assert set(by_recipe) == {"loss=mnrl", "loss=gist", "loss=cached_mnrl"}
    assert {r.data.tags[PARENT_TAG] for r in runs["recipe"]} == {parent}
    for member in runs["member"]:
        recipe = by_recipe[f"loss={member.data.params['loss.name']}"]
        assert member.data.tags[PARENT_TAG] == recipe.info.run_id
    gist = by_recipe["loss=gist"]
    assert gist.data.tags["verdict"] == "seeds disagree"
    assert gist.data.metrics["ndcg_at_10"] == pytest.approx(sum(values) / 3)
    assert gist.data.metrics["ndcg_at_10_sd"] == pytest.approx(statistics.stdev(values))
    assert gist.data.metrics["vs_baseline.ndcg_at_10_p_adjusted"] == lucky["p_adjusted"]
    assert gist.data.params["loss.name"] == "gist" and "train.seed" not in gist.data.params
    assert gist.data.params["seeds"] == "train.seed=42; train.seed=43; train.seed=44"
    write_report("seeded")  # again: no new parent runs
    again = _runs_by_kind("irtune-sweep-seeded")
    assert (len(again["sweep"]), len(again["recipe"])) == (1, 3)


def test_recipes_are_tested_against_their_zero_shot_model_without_a_baseline(
    root: Path,
) -> None:
    """sweep.baseline "": each recipe against the zero-shot scores its members' evaluate
    stage kept; runs without them are named."""
    _write_sweep(root, "zs", {"train.epochs": "1,2"})
    from irtune.sweep.definition import sweep_config

    cfg = sweep_config("zs")
    cfg.sweep.id = "z1"
    rng = random.Random(9)
    zero = {f"q{i}": {m: rng.uniform(0.2, 0.6) for m in _METRICS} for i in range(30)}
    for epochs, shift in ((1, 0.03), (2, 0.0)):
        for seed in (1, 2):
            cfg.train.epochs, cfg.train.seed = epochs, seed
            per_query = _shifted(zero, rng, shift, 0.003)
            _log_member(cfg, f"zs-z1-{epochs}-{seed}", per_query, root, zero_shot=zero)
    summary = json.loads((write_report("zs") / "report.json").read_text())
    assert summary["baseline"] == "the zero-shot model" and summary["method"]["family"] == 2
    verdicts = {r["axes"]["train.epochs"]: r["verdict"] for r in summary["recipes"]}
    assert verdicts == {"1": "better", "2": "no significant difference"}, summary["recipes"]

    cfg.sweep.id = "z2"
    _log_member(cfg, "zs-z2-old", zero, root)  # no zero-shot scores kept
    with pytest.raises(ConfigError, match=r"zs-z2-old.*no zero-shot per-query scores"):
        write_report("zs")


def test_sweep_seeds_repeat_every_member_as_a_train_seed_axis(root: Path) -> None:
    """sweep.seeds=[...] (here from the command line) adds the axis train.seed; the recipe
    axes stay those of the file; a file that sweeps train.seed itself cannot take both."""
    from irtune.sweep.definition import sweep_config

    _write_sweep(root, "rep", {"loss": "mnrl,gist"})
    cfg = sweep_config("rep", overrides=["sweep.seeds=[7,8,9]"])
    assert cfg.sweep.seeds == [7, 8, 9]
    sweep = load_sweep("rep").with_seeds(cfg.sweep.seeds)
    assert sweep.recipe_axes == ["loss"]
    got = members(sweep, ["sweep=rep"])
    assert len(got) == 6
    assert [m[1:] for m in got[:3]] == [
        ["loss=mnrl", "train.seed=7"], ["loss=mnrl", "train.seed=8"], ["loss=mnrl", "train.seed=9"]
    ]  # fmt: skip
    validate_members(got)
    assert load_sweep("rep").with_seeds([]) == load_sweep("rep")
    _write_sweep(root, "own", {"loss": "mnrl", "train.seed": "1,2"})
    assert load_sweep("own").recipe_axes == ["loss"]
    with pytest.raises(ConfigError, match=r"'sweep.seeds' and the axis 'train.seed'"):
        load_sweep("own").with_seeds([1, 2])
    with pytest.raises(ConfigError, match=r"'sweep.seeds' repeats a seed"):
        sweep_config("rep", overrides=["sweep.seeds=[7,7]"])


def test_report_without_runs_names_the_store(root: Path) -> None:
    _write_sweep(root, "ghost", {"loss": "mnrl,gist"})
    with pytest.raises(ConfigError, match=r"no MLflow run of sweep 'ghost'.*irtune-sweep-ghost"):
        write_report("ghost")
    assert not (root / "reports" / "ghost").exists()


def test_the_command_line_narrows_an_axis_and_shares_the_rest(root: Path) -> None:
    """``make sweep SWEEP=losses OVERRIDES="loss=mnrl,cosent"``: an override of an axis key
    replaces that axis's values; any other override is shared by every member."""
    _write_sweep(root, "wide", {"loss": "mnrl,gist,cosent", "train.batch_size": "16,32"})
    sweep, shared = load_sweep("wide").with_overrides(["loss=mnrl,cosent", "train.epochs=2"])
    assert sweep.axes == {"loss": "mnrl,cosent", "train.batch_size": "16,32"}
    assert shared == ["train.epochs=2"]
    got = members(sweep, ["sweep=wide", *shared])
    assert [m[2:] for m in got] == [
        ["loss=mnrl", "train.batch_size=16"],
        ["loss=mnrl", "train.batch_size=32"],
        ["loss=cosent", "train.batch_size=16"],
        ["loss=cosent", "train.batch_size=32"],
    ]
    validate_members(got)


def test_the_queue_is_alive_while_its_processes_run(tmp_path: Path) -> None:
    """A member counts as running, and a worker as alive, while its process runs, whatever
    ``dvc queue status`` (which asks the workers, who may not answer in time) says: the
    records are laid out as DVC's queue writes them."""
    import subprocess
    import sys

    from irtune.sweep.queue import alive_here

    exps = tmp_path / ".dvc" / "tmp" / "exps"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        for rev, name, pid in [("a1", "sw-1", sleeper.pid), ("b2", "sw-2", gone.pid)]:
            folder = exps / "run" / rev
            folder.mkdir(parents=True)
            (folder / f"{rev}.run").write_text(json.dumps({"name": name, "location": "dvc-task"}))
            (folder / f"{rev}.pid").write_text(f"{pid}\n")
        (exps / "run" / "c3").mkdir()
        (exps / "run" / "c3" / "c3.run").write_text("{")  # being written
        workers = exps / "celery"
        workers.mkdir()
        (workers / "dvc-exp-worker-1.json").write_text(json.dumps({"pid": sleeper.pid}))
        (workers / "dvc-exp-worker-2.json").write_text(json.dumps({"pid": gone.pid}))
        assert alive_here(tmp_path) == ({"sw-1"}, 1)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert alive_here(tmp_path) == (set(), 0)
    assert alive_here(tmp_path / "nothing") == (set(), 0)


def test_a_member_removed_from_the_queue_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member someone takes out of DVC's queue (`dvc queue remove`) will never run: the
    sweep counts it as failed ("Removed") instead of waiting for it forever, whether it left
    while the sweep watched or was gone before. With no worker started, only the real
    `dvc queue status` of a real queue decides."""
    import subprocess
    import sys
    import threading

    from irtune.sweep.queue import REMOVED, wait

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, timeout=120)

    dvc = str(Path(sys.executable).parent / "dvc")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    sh("git", "init", "-q")
    sh(dvc, "init", "-q")
    (tmp_path / "params.yaml").write_text("x: 1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  echo:\n    cmd: echo ${x} > out.txt\n    params: [x]\n    outs: [out.txt]\n"
    )
    sh(*git, "add", "-A")
    sh(*git, "commit", "-qm", "init")
    sh(dvc, "exp", "run", "--queue", "-n", "gone-before", "-S", "x=2")
    sh(dvc, "exp", "run", "--queue", "-n", "gone-while", "-S", "x=3")
    sh(dvc, "queue", "remove", "gone-before")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{Path(dvc).parent}:{__import__('os').environ['PATH']}")

    # Gone before the wait: "Removed" once the grace period is over.
    assert wait(["gone-before"], poll_s=0.2, orphan_after_s=1, root=tmp_path) == {
        "gone-before": REMOVED
    }
    # Gone while the sweep watched it: "Removed" at once (the grace period is long).
    remover = threading.Timer(2.0, sh, args=(dvc, "queue", "remove", "gone-while"))
    remover.start()
    try:
        final = wait(["gone-while"], poll_s=0.2, orphan_after_s=600, root=tmp_path)
    finally:
        remover.join()
    assert final == {"gone-while": REMOVED}
