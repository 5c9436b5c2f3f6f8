"""Paired significance against the zero-shot baseline: gains and regressions both flagged."""

from __future__ import annotations

import pytest
from scipy.stats import ttest_rel

from irtune.evaluate import compare


def _per_query(values: list[float]) -> dict[str, dict[str, float]]:
    return {f"q{i}": {"ndcg_at_10": v} for i, v in enumerate(values)}


BASE = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.2, 0.3, 0.1, 0.4]


def test_consistent_gain_is_better() -> None:
    """Every query up by about 0.1: significant, verdict 'better', delta and p as scipy says."""
    ours = [b + 0.1 + 0.01 * (i % 3) for i, b in enumerate(BASE)]
    result = compare(_per_query(ours), _per_query(BASE), alpha=0.05)["ndcg_at_10"]
    assert result["verdict"] == "better"
    assert result["delta"] == pytest.approx(sum(ours) / 10 - sum(BASE) / 10, abs=1e-6)
    assert result["p_value"] == pytest.approx(ttest_rel(ours, BASE).pvalue, abs=1e-6)


def test_consistent_loss_is_worse() -> None:
    """A regression is flagged as clearly as a gain."""
    ours = [b - 0.05 - 0.01 * (i % 2) for i, b in enumerate(BASE)]
    result = compare(_per_query(ours), _per_query(BASE), alpha=0.05)["ndcg_at_10"]
    assert result["verdict"] == "worse"
    assert result["delta"] < 0


def test_noise_is_not_significant() -> None:
    """Gains and losses that cancel out are no significant difference."""
    ours = [b + (0.1 if i % 2 else -0.1) for i, b in enumerate(BASE)]
    result = compare(_per_query(ours), _per_query(BASE), alpha=0.05)["ndcg_at_10"]
    assert result["verdict"] == "no significant difference"
    assert result["p_value"] > 0.05


def test_identical_runs_have_p_one() -> None:
    """A zero-shot run compared with itself: p = 1, delta 0 (no NaN from a zero variance)."""
    result = compare(_per_query(BASE), _per_query(BASE), alpha=0.05)["ndcg_at_10"]
    assert result == {
        "value": pytest.approx(0.31),
        "baseline": pytest.approx(0.31),
        "delta": 0.0,
        "p_value": 1.0,
        "verdict": "no significant difference",
    }


def test_different_query_sets_refused() -> None:
    """Comparing runs scored on different queries is a bug, not a result."""
    with pytest.raises(ValueError, match="different queries"):
        compare(_per_query(BASE), _per_query(BASE[:-1]), alpha=0.05)
