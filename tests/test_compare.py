"""`python -m irtune.compare`: where it finds per-query metrics. The comparison itself runs
between two real DVC experiments in the end-to-end test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from irtune.compare import per_query_path
from irtune.errors import IrtuneError

REPO = Path(__file__).resolve().parents[1]


def test_per_query_path_is_an_output_of_the_evaluate_stage() -> None:
    """The path comes from dvc.yaml, the one place paths are written, and DVC tracks it."""
    path = per_query_path(REPO)
    outs = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["evaluate"]
    assert path in outs["outs"], (path, outs["outs"])


def test_a_dvc_yaml_without_per_query_output_is_named(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: python stages/evaluate.py --out m.json\n", encoding="utf-8"
    )
    with pytest.raises(IrtuneError, match=r"dvc\.yaml.*--per-query"):
        per_query_path(tmp_path)


def test_a_side_may_list_a_recipes_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make compare A=s1,s2,s3 B=base`: A's replicates are averaged per query and judged by
    the sweep report's rule; the table shows the test, the delta's CI and the verdict."""
    import irtune.compare as cmp

    base = {f"q{i}": {"ndcg_at_10": 0.1 * (i % 5)} for i in range(20)}
    shifts = {"s1": 0.08, "s2": -0.01, "s3": -0.01, "base": 0.0, "steady": 0.02}
    runs = {
        name: {"rerank": {q: {"ndcg_at_10": v["ndcg_at_10"] + d} for q, v in base.items()}}
        for name, d in shifts.items()
    }
    monkeypatch.setattr(cmp, "load_per_query", lambda name, root=None: runs[name])
    lucky = cmp.compare_experiments("s1,s2,s3", "base", run="rerank")["ndcg_at_10"]
    assert lucky["seeds"] == 3 and lucky["verdict"] == "seeds disagree", lucky
    alone = cmp.compare_experiments("s1", "base", run="rerank")["ndcg_at_10"]
    assert alone["verdict"] == "better" and "seeds" not in alone  # one run: no seed rule
    result = cmp.compare_experiments("steady", "base", run="rerank")
    table = cmp.markdown("steady", "base", "rerank", result)
    assert "paired randomization test (10000 sign flips)" in table
    assert "| ndcg_at_10 | 0.2200 | 0.2000 | +0.0200 | [+0.0200, +0.0200] |" in table, table
    with pytest.raises(IrtuneError, match=r"s1: no 'retrieve' run"):
        cmp.compare_experiments("s1", "base")


def test_one_experiments_rerank_against_its_first_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make compare A=x B=x RUN=rerank RUN_B=retrieve`: the same experiment on both sides,
    its reranked run tested against the first stage it reranked."""
    import irtune.compare as cmp

    first = {f"q{i}": {"ndcg_at_10": 0.05 * (i % 7)} for i in range(30)}
    runs = {
        "x": {
            "retrieve": first,
            "rerank": {q: {"ndcg_at_10": v["ndcg_at_10"] + 0.03} for q, v in first.items()},
        }
    }
    monkeypatch.setattr(cmp, "load_per_query", lambda name, root=None: runs[name])
    result = cmp.compare_experiments("x", "x", run="rerank", run_b="retrieve")["ndcg_at_10"]
    assert result["verdict"] == "better" and result["delta"] == pytest.approx(0.03), result
    same = cmp.compare_experiments("x", "x", run="rerank")["ndcg_at_10"]
    assert same["delta"] == 0.0 and same["verdict"] == "no significant difference", same
