"""The DVC plots' data (irtune.plots); the stages write it in test_stages.py, and DVC draws
and diffs it in the end-to-end test."""

from __future__ import annotations

import math

import pytest

from irtune.config import EvaluateConfig
from irtune.plots import per_query_delta

QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}
#: Zero-shot: q1 and q2 find their document first, q3 second.
ZERO_SHOT = {
    "q1": {"d1": 2.0, "d9": 1.0},
    "q2": {"d2": 2.0, "d9": 1.0},
    "q3": {"d9": 2.0, "d3": 1.0},
}


def test_per_query_delta_is_sorted_best_gain_first_ties_by_query() -> None:
    """q3 gains (its document moves to the top), q1 loses it; q2 is unchanged."""
    per_query = {
        "q1": {"ndcg_at_10": 0.0},
        "q2": {"ndcg_at_10": 1.0},
        "q3": {"ndcg_at_10": 1.0},
    }
    points = per_query_delta(QRELS, per_query, ZERO_SHOT, EvaluateConfig())
    assert [(p["rank"], p["query"]) for p in points] == [(1, "q3"), (2, "q2"), (3, "q1")]
    second = 1 / math.log2(3)  # NDCG@10 of one relevant document at rank 2
    assert [p["delta"] for p in points] == pytest.approx([1 - second, 0.0, -1.0], abs=1e-6)
    assert [p["zero_shot"] for p in points] == pytest.approx([second, 1.0, 1.0], abs=1e-6)


def test_ties_are_ordered_by_query_id_whatever_the_input_order() -> None:
    per_query = {q: {"ndcg_at_10": 1.0} for q in ("q2", "q1")}
    points = per_query_delta(
        {q: QRELS[q] for q in ("q1", "q2")}, per_query, ZERO_SHOT, EvaluateConfig()
    )
    assert [p["query"] for p in points] == ["q1", "q2"]


def test_no_baseline_no_points() -> None:
    """evaluate.baseline off: an empty plot, which DVC draws as empty."""
    assert per_query_delta(QRELS, {"q1": {"ndcg_at_10": 1.0}}, None, EvaluateConfig()) == []
