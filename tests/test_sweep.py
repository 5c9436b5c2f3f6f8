"""Named sweeps and their report, without DVC's queue (tests/test_e2e.py runs that).

Sweep files are read and expanded as ``make sweep`` does; the report is built from runs
logged to a real SQLite MLflow store by :func:`irtune.tracking.log_record`, the evaluate
stage's own logging path, with per-query metrics made up so that the expected ranking and
significance are known.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from harness import REPO

from irtune import tracking
from irtune.config import Config
from irtune.errors import ConfigError
from irtune.sweep.definition import load_sweep, members, validate_members
from irtune.sweep.report import REPORT_KIND, write_report

SWEEPS = sorted(p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml"))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository root with this checkout's conf/, as the cwd (the store lives there)."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
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


def _log_member(cfg: Config, name: str, per_query: dict, root: Path) -> str:
    """Log one member's run as the evaluate stage does (record -> log_record)."""
    mean = {m: sum(q[m] for q in per_query.values()) / len(per_query) for m in _METRICS}
    folder = root / "members" / name
    folder.mkdir(parents=True)
    (folder / "per_query.json").write_text(json.dumps({"retrieve": per_query, "rerank": per_query}))
    history = {"summary": {"steps": 3}, "loss_curve": [], "dev_curve": [
        {"step": 3, "epoch": 1.0, "dev_ndcg_at_10": mean["ndcg_at_10"] - 0.01},
        {"step": 6, "epoch": 2.0, "dev_ndcg_at_10": mean["ndcg_at_10"]},
    ]}  # fmt: skip
    record = tracking.build_record(
        cfg, {"retrieve": mean, "rerank": mean}, {}, history, [folder / "per_query.json"]
    )
    record["run_name"] = name
    return tracking.log_record(record, cfg.tracking)


_METRICS = ("ndcg_at_10", "recall_at_100", "mrr_at_10")


def test_report_ranks_members_and_tests_them_against_the_baseline_member(root: Path) -> None:
    from mlflow.tracking import MlflowClient

    from irtune.sweep.definition import sweep_config

    _write_sweep(root, "lr", {"train.lr": "1e-5,2e-5,5e-5"}, baseline="train.lr=2e-05")
    cfg = sweep_config("lr")
    assert cfg.tracking.experiment == "irtune-sweep-lr" and cfg.sweep.name == "lr"
    # Per-query NDCG: 2e-5 is the baseline; 5e-5 beats it on every query (significant);
    # 1e-5 is the baseline plus noise (no significant difference).
    rng = random.Random(0)
    base = {f"q{i}": {m: rng.uniform(0.2, 0.6) for m in _METRICS} for i in range(40)}
    better = {
        q: {m: v + 0.05 + rng.uniform(0, 0.01) for m, v in s.items()} for q, s in base.items()
    }
    noisy = {q: {m: v + rng.uniform(-0.02, 0.02) for m, v in s.items()} for q, s in base.items()}
    for sweep_id in ("old", "new"):  # the report takes the latest invocation
        for lr, per_query in (("1e-05", noisy), ("2e-05", base), ("5e-05", better)):
            cfg.train.lr = float(lr)
            cfg.sweep.id = sweep_id
            _log_member(cfg, f"lr-{sweep_id}-{lr}", per_query, root)

    out = write_report("lr", failed=["lr-new-4"])
    summary = json.loads((out / "report.json").read_text())
    assert summary["sweep_id"] == "new"
    names = [m["name"] for m in summary["members"]]
    assert names == ["lr-new-5e-05", "lr-new-1e-05", "lr-new-2e-05"] or names == [
        "lr-new-5e-05", "lr-new-2e-05", "lr-new-1e-05"
    ], names  # fmt: skip
    verdicts = {m["axes"]["train.lr"]: m["vs_baseline"]["verdict"] for m in summary["members"]}
    assert verdicts == {
        "5e-05": "better",
        "2e-05": "(baseline)",
        "1e-05": "no significant difference",
    }, verdicts
    # Dev curves by epoch: logged at steps 3 and 6 of a 3-steps-per-epoch schedule.
    assert [p[0] for p in summary["members"][0]["dev_curve"]] == [1.0, 2.0]
    scores = [m["metrics"]["ndcg_at_10"] for m in summary["members"]]
    assert scores == sorted(scores, reverse=True)
    md = (out / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`lr-new" in line]
    assert [r.split("|")[2].strip(" `") for r in rows] == names, md
    assert "lr-new-4" in md and "against member `lr-new-2e-05`" in md
    assert sorted(p.name for p in out.glob("*.png")) == [
        "dev_curves.png",
        "ndcg_at_10_by_train_lr.png",
    ]

    # Logged once as a report run; writing the report again reuses that run.
    write_report("lr")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("irtune-sweep-lr")
    reports = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`irtune.kind` = '{REPORT_KIND}'"
    )
    assert len(reports) == 1, [r.info.run_name for r in reports]
    assert reports[0].data.tags["best_member"] == "lr-new-5e-05"
    assert {a.path for a in client.list_artifacts(reports[0].info.run_id)} >= {
        "report.md", "report.json", "dev_curves.png"
    }  # fmt: skip


def test_report_without_runs_names_the_store(root: Path) -> None:
    _write_sweep(root, "ghost", {"loss": "mnrl,gist"})
    with pytest.raises(ConfigError, match=r"no MLflow run of sweep 'ghost'.*irtune-sweep-ghost"):
        write_report("ghost")
    assert not (root / "reports" / "ghost").exists()
