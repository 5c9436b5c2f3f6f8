"""evaluate_run against metrics computed by hand on a two-query toy example.

trec_eval's ``ndcg_cut`` (and so pytrec_eval, BEIR and this project) uses the qrels grade
itself as the gain: DCG@k = sum(rel_i / log2(i + 1)), i = 1..k. It does *not* use
2^rel - 1. The toy example holds a grade-2 document below rank 1, so the two formulas give
different values and the test pins down the trec_eval one.
"""

from __future__ import annotations

import math

import pytest

from irtune.config import EvaluateConfig
from irtune.evaluate import evaluate_run

METRICS = {"ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100"}

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1},
    "q2": {"e1": 1},
}


def _ranked(doc_ids: list[str]) -> dict[str, float]:
    """Scores that put ``doc_ids`` in the given order (no ties)."""
    return {did: float(len(doc_ids) - i) for i, did in enumerate(doc_ids)}


# q1: d2 (grade 1) at 1, d1 (grade 2) at 3, d3 (grade 0) at 4, d4 (grade 1) at 12.
Q1_RANKING = ["d2", "x1", "d1", "d3", *(f"x{i}" for i in range(2, 9)), "d4"]
# q2: its only relevant doc at rank 11, just past the @10 cut-offs.
Q2_RANKING = [*(f"y{i}" for i in range(1, 11)), "e1", *(f"y{i}" for i in range(11, 15))]
RUN = {"q1": _ranked(Q1_RANKING), "q2": _ranked(Q2_RANKING)}


def _dcg(gains: list[float]) -> float:
    """trec_eval DCG: gain / log2(rank + 1), ranks from 1."""
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def _expected(ndcg_k: int = 10) -> dict[str, dict[str, float]]:
    """The four metrics of both queries, from the definitions."""
    q1_gains = [QRELS["q1"].get(d, 0) for d in Q1_RANKING]
    q1_ideal = sorted(QRELS["q1"].values(), reverse=True)
    q1 = {
        f"ndcg_at_{ndcg_k}": _dcg(q1_gains[:ndcg_k]) / _dcg(q1_ideal[:ndcg_k]),
        # all three relevant docs (d1, d2, d4) are in the top 100
        "recall_at_100": 3 / 3,
        # first relevant doc (d2) at rank 1
        "mrr_at_10": 1 / 1,
        # precision at each relevant doc's rank: d2 @1, d1 @3, d4 @12; over 3 relevant
        "map_at_100": (1 / 1 + 2 / 3 + 3 / 12) / 3,
    }
    q2 = {
        f"ndcg_at_{ndcg_k}": 0.0 if ndcg_k < 11 else 1 / math.log2(12),
        "recall_at_100": 1.0,
        "mrr_at_10": 0.0,  # rank 11 is outside MRR@10
        "map_at_100": (1 / 11) / 1,
    }
    return {"q1": q1, "q2": q2}


def test_hand_computed_values() -> None:
    """Per-query and mean NDCG@10, recall@100, MRR@10 and MAP@100 match the hand computation."""
    assert Q1_RANKING.index("d4") + 1 == 12
    assert Q2_RANKING.index("e1") + 1 == 11
    means, per_query = evaluate_run(QRELS, RUN, EvaluateConfig())
    expected = _expected()
    # Spelled out once, so a reader can check the formula: q1's DCG@10 = 1/1 + 2/2 = 2 and
    # its ideal DCG@10 = 2/1 + 1/log2(3) + 1/log2(4).
    assert expected["q1"]["ndcg_at_10"] == pytest.approx(2 / (2 + 1 / math.log2(3) + 0.5))
    assert per_query.keys() == {"q1", "q2"}
    for qid in ("q1", "q2"):
        assert per_query[qid].keys() == METRICS
        for metric, value in expected[qid].items():
            assert per_query[qid][metric] == pytest.approx(value, abs=1e-6), (qid, metric)
    for metric in METRICS:
        mean = (expected["q1"][metric] + expected["q2"][metric]) / 2
        assert means[metric] == pytest.approx(mean, abs=1e-6), metric


def test_gain_is_linear_as_in_trec_eval() -> None:
    """NDCG uses the grade as gain (trec_eval), not 2^grade - 1."""
    _, per_query = evaluate_run(QRELS, RUN, EvaluateConfig())
    exp_gain = [2**g - 1 for g in (QRELS["q1"].get(d, 0) for d in Q1_RANKING[:10])]
    exp_ideal = [2**g - 1 for g in sorted(QRELS["q1"].values(), reverse=True)]
    exponential = _dcg(exp_gain) / _dcg(exp_ideal)
    assert per_query["q1"]["ndcg_at_10"] != pytest.approx(exponential, abs=1e-3)


def test_cutoffs_follow_the_config() -> None:
    """Other cut-offs change both the names and the values (NDCG@3 of q1 by hand)."""
    means, per_query = evaluate_run(
        QRELS, RUN, EvaluateConfig(ndcg_k=3, recall_k=5, mrr_k=1, map_k=100)
    )
    assert set(means) == {"ndcg_at_3", "recall_at_5", "mrr_at_1", "map_at_100"}
    # top 3 of q1: d2 (1), x1 (0), d1 (2); ideal top 3: 2, 1, 1
    assert per_query["q1"]["ndcg_at_3"] == pytest.approx(
        (1 + 2 / 2) / (2 + 1 / math.log2(3) + 1 / 2), abs=1e-6
    )
    assert per_query["q1"]["recall_at_5"] == pytest.approx(2 / 3, abs=1e-6)  # d2, d1 of 3
    assert per_query["q1"]["mrr_at_1"] == 1.0
    assert per_query["q2"]["recall_at_5"] == 0.0


def test_query_missing_from_run_counts_zero() -> None:
    """A judged query the run does not answer scores 0 on every metric and lowers the mean."""
    qrels = {**QRELS, "q3": {"z1": 1}}
    means, per_query = evaluate_run(qrels, RUN, EvaluateConfig())
    expected = _expected()
    assert per_query["q3"] == dict.fromkeys(METRICS, 0.0)
    for metric in METRICS:
        mean = (expected["q1"][metric] + expected["q2"][metric] + 0.0) / 3
        assert means[metric] == pytest.approx(mean, abs=1e-6), metric


def test_query_without_relevant_docs_is_skipped() -> None:
    """A query judged only with grade 0 is left out of the per-query table and the means."""
    qrels = {**QRELS, "q0": {"d1": 0}}
    run = {**RUN, "q0": _ranked(["d1"])}
    means, per_query = evaluate_run(qrels, run, EvaluateConfig())
    assert "q0" not in per_query
    assert means == evaluate_run(QRELS, RUN, EvaluateConfig())[0]


def test_unjudged_query_in_run_is_ignored() -> None:
    """Run entries for queries outside the qrels change nothing."""
    run = {**RUN, "qx": _ranked(["d1", "d2"])}
    assert evaluate_run(QRELS, run, EvaluateConfig()) == evaluate_run(QRELS, RUN, EvaluateConfig())


def test_metric_names_have_no_at_sign() -> None:
    """Every metric name is MLflow/DVC friendly: no '@'."""
    means, per_query = evaluate_run(QRELS, RUN, EvaluateConfig())
    names = set(means) | {m for q in per_query.values() for m in q}
    assert names == METRICS
    assert not any("@" in name for name in names)
