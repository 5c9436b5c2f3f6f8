"""`make regress` (irtune.regress): comparing an experiment with its row, and the report.
The whole command, reading and running real DVC experiments, runs on the tiny fixture in the
end-to-end test (tests/e2e/test_pipeline.py)."""

from __future__ import annotations

from dataclasses import asdict

from irtune.config import Config
from irtune.regress import Check, compare_metrics, measured_yaml, params_differences, report
from irtune.results import Row

METRICS = {"retrieve": {"ndcg_at_10": 0.3159, "recall_at_100": 0.3115}, "rerank": {}}


def test_metrics_within_the_tolerance_pass_others_fail() -> None:
    row = Row("r", "d", expected={"ndcg_at_10": 0.3165, "recall_at_100": 0.3130}, tolerance=0.001)
    checks = compare_metrics(row, METRICS)
    assert [(c.metric, c.status) for c in checks] == [
        ("ndcg_at_10", "OK"),
        ("recall_at_100", "FAIL"),
    ]
    assert checks[1].expected == 0.3130 and checks[1].actual == 0.3115


def test_the_tolerance_edge_passes() -> None:
    """|actual - expected| == tolerance is within it, whatever the float rounding."""
    row = Row("r", "d", expected={"ndcg_at_10": 0.3169}, tolerance=0.001)
    assert compare_metrics(row, METRICS)[0].status == "OK"


def test_a_metric_the_experiment_lacks_fails_naming_it() -> None:
    row = Row("r", "d", expected={"map_at_100": 0.14})
    (check,) = compare_metrics(row, METRICS)
    assert check.status == "FAIL" and "no retrieve.map_at_100" in check.note


def test_a_row_expecting_nothing_reports_what_it_measured() -> None:
    checks = compare_metrics(Row("r", "d"), METRICS)
    assert {c.metric: (c.status, c.actual) for c in checks} == {
        "ndcg_at_10": ("NEW", 0.3159),
        "recall_at_100": ("NEW", 0.3115),
    }
    assert (
        measured_yaml(checks) == "r:\n    expected: {ndcg_at_10: 0.3159, recall_at_100: 0.3115}\n"
    )


def test_params_differences_name_the_keys_and_skip_tracking() -> None:
    ours = asdict(Config())
    theirs = asdict(Config())
    assert params_differences(ours, theirs) == []
    theirs["train"]["lr"] = 5e-5
    theirs["tracking"]["experiment"] = "elsewhere"  # where it was logged: not the recipe
    theirs["sweep"]["id"] = "1202-0000"
    assert params_differences(ours, theirs) == ["train.lr: 5e-05 (experiment) vs 2e-05 (row)"]


def test_an_experiment_of_an_older_config_is_named() -> None:
    theirs = asdict(Config())
    theirs["train"]["old_knob"] = 1
    (difference,) = params_differences(asdict(Config()), theirs)
    assert "does not fit today's config" in difference and "old_knob" in difference


def test_report_a_line_per_check_and_a_summary() -> None:
    checks = [
        Check("nfcorpus-zero-shot", "ndcg_at_10", "OK", 0.3159, 0.3159, 0.001),
        Check("nfcorpus-bm25", "ndcg_at_10", "FAIL", 0.3210, 0.3010, 0.001),
        Check("old", "-", "SKIP", note="superseded (before stop 10)"),
    ]
    lines = report(checks).splitlines()
    assert lines[0].split() == ["row", "metric", "expected", "actual", "delta", "tol", "result"]
    assert lines[1].split() == ["nfcorpus-zero-shot", "ndcg_at_10", "0.3159", "0.3159", "+0.0000",
                                "0.001", "OK"]  # fmt: skip
    assert lines[2].split() == ["nfcorpus-bm25", "ndcg_at_10", "0.3210", "0.3010", "-0.0200",
                                "0.001", "FAIL"]  # fmt: skip
    assert lines[3].endswith("SKIP  superseded (before stop 10)")
    assert lines[4] == "1 OK, 1 FAIL, 1 SKIP; failed: nfcorpus-bm25"
