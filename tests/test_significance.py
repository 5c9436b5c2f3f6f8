"""Paired significance: the randomization test, the t-test, bootstrap intervals, Holm's
correction and the verdict over seeds, on constructed per-query scores whose answer is known
without running the code under test."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from scipy.stats import ttest_rel

from irtune.config import EvaluateConfig
from irtune.evaluate import compare
from irtune.significance import (
    NO_DIFFERENCE,
    SEEDS_DISAGREE,
    adjust,
    compare_replicates,
    holm,
    seeds_agree,
    verdict,
)


def _per_query(values: list[float]) -> dict[str, dict[str, float]]:
    return {f"q{i:02d}": {"ndcg_at_10": v} for i, v in enumerate(values)}


BASE = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.2, 0.3, 0.1, 0.4]


def _exact_sign_flip_p(diffs: list[float]) -> float:
    """The two-sided paired randomization test by brute force: the share of all 2^n sign
    assignments whose mean is at least as far from 0 as the observed one."""
    observed = abs(sum(diffs))
    hits = sum(
        abs(sum(s * d for s, d in zip(signs, diffs, strict=True))) >= observed - 1e-12
        for signs in itertools.product((1, -1), repeat=len(diffs))
    )
    return hits / 2 ** len(diffs)


def test_consistent_gain_is_better_with_the_exact_randomization_p() -> None:
    """Every query up by about 0.1: 'better'; with 10 queries (1024 sign assignments, fewer
    than the resamples) the p-value is the exact one, computed here by brute force."""
    ours = [b + 0.1 + 0.01 * (i % 3) for i, b in enumerate(BASE)]
    result = compare(_per_query(ours), _per_query(BASE), alpha=0.05)["ndcg_at_10"]
    assert result["verdict"] == "better"
    assert result["test"] == "permutation" and result["correction"] == "none"
    assert result["delta"] == pytest.approx(sum(ours) / 10 - sum(BASE) / 10, abs=1e-6)
    diffs = [o - b for o, b in zip(ours, BASE, strict=True)]
    assert result["p_value"] == pytest.approx(_exact_sign_flip_p(diffs), abs=1e-6)
    assert result["p_value"] == pytest.approx(2 / 1024, abs=1e-6)  # only all-+ and all--


def test_mixed_signs_match_the_brute_force_randomization_p() -> None:
    """Gains and losses of different sizes: the p-value is still the exact one."""
    rng = random.Random(3)
    diffs = [rng.uniform(-0.1, 0.2) for _ in range(12)]
    ours = [b + d for b, d in zip([*BASE, 0.5, 0.5], diffs, strict=True)]
    result = compare(_per_query(ours), _per_query([*BASE, 0.5, 0.5]), 0.05)["ndcg_at_10"]
    # The per-query values are rounded to 6 decimals only in the output; the test is on
    # the values given.
    assert result["p_value"] == pytest.approx(_exact_sign_flip_p(diffs), abs=1e-6)


def test_the_t_test_stays_available() -> None:
    """evaluate.test=ttest: scipy's paired t-test, as before."""
    ours = [b + 0.05 + 0.04 * (i % 2) for i, b in enumerate(BASE)]
    cfg = EvaluateConfig(test="ttest")
    result = compare(_per_query(ours), _per_query(BASE), 0.05, cfg)["ndcg_at_10"]
    assert result["test"] == "ttest"
    assert result["p_value"] == pytest.approx(ttest_rel(ours, BASE).pvalue, abs=1e-6)
    assert result["verdict"] == "better"


def test_consistent_loss_is_worse() -> None:
    """A regression is flagged as clearly as a gain."""
    ours = [b - 0.05 - 0.01 * (i % 2) for i, b in enumerate(BASE)]
    result = compare(_per_query(ours), _per_query(BASE), alpha=0.05)["ndcg_at_10"]
    assert result["verdict"] == "worse"
    assert result["delta"] < 0 and result["ci_high"] < 0


def test_noise_is_not_significant_and_its_interval_holds_zero() -> None:
    """Gains and losses that cancel out are no significant difference."""
    ours = [b + (0.1 if i % 2 else -0.1) for i, b in enumerate(BASE)]
    result = compare(_per_query(ours), _per_query(BASE), alpha=0.05)["ndcg_at_10"]
    assert result["verdict"] == NO_DIFFERENCE
    assert result["p_value"] > 0.05
    assert result["ci_low"] < 0 < result["ci_high"]


def test_identical_runs_have_p_one() -> None:
    """A zero-shot run compared with itself: p = 1, delta 0, a point interval (no NaN)."""
    result = compare(_per_query(BASE), _per_query(BASE), alpha=0.05)["ndcg_at_10"]
    assert result == {
        "value": pytest.approx(0.31),
        "baseline": pytest.approx(0.31),
        "delta": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
        "p_value": 1.0,
        "test": "permutation",
        "correction": "none",
        "verdict": NO_DIFFERENCE,
    }


def test_the_bootstrap_interval_holds_the_delta_and_narrows_with_queries() -> None:
    """The 95% interval of the mean difference contains the delta, lies within the range of
    the differences, and is about sqrt(4) = 2 times narrower on 4 times the queries; it is
    seeded, so it is the same every time."""
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 400):
        base = rng.uniform(0.2, 0.6, n)
        diffs = rng.normal(0.02, 0.1, n)
        result = compare(_per_query(list(base + diffs)), _per_query(list(base)), 0.05)
        r = result["ndcg_at_10"]
        assert r["ci_low"] <= r["delta"] <= r["ci_high"], r
        assert diffs.min() <= r["ci_low"] and r["ci_high"] <= diffs.max()
        # The normal approximation: mean +- 1.96 standard errors.
        se = diffs.std(ddof=1) / np.sqrt(n)
        assert r["ci_high"] - r["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.15)
        widths.append(r["ci_high"] - r["ci_low"])
        again = compare(_per_query(list(base + diffs)), _per_query(list(base)), 0.05)
        assert again == result
    assert widths[0] / widths[1] == pytest.approx(2, rel=0.2)


def test_the_resample_seed_moves_a_sampled_p_only_within_its_error() -> None:
    """Past 2^n > permutations the p-value is sampled: another seed gives another p, within
    a few standard errors of the t-test's large-sample answer."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.6, 60)
    ours = base + rng.normal(0.02, 0.1, 60)
    ps = [
        compare(_per_query(list(ours)), _per_query(list(base)), 0.05,
                EvaluateConfig(resample_seed=seed, permutations=4000))["ndcg_at_10"]["p_value"]
        for seed in (1, 2)
    ]  # fmt: skip
    assert ps[0] != ps[1]
    reference = ttest_rel(ours, base).pvalue
    for p in ps:
        assert abs(p - reference) < 4 * np.sqrt(reference * (1 - reference) / 4000) + 0.01


def test_different_query_sets_refused() -> None:
    """Comparing runs scored on different queries is a bug, not a result."""
    with pytest.raises(ValueError, match="different queries"):
        compare(_per_query(BASE), _per_query(BASE[:-1]), alpha=0.05)


def test_holm_on_the_published_worked_example() -> None:
    """Holm (1979), as Wikipedia's 'Holm-Bonferroni method' article works it: p = 0.01,
    0.04, 0.03, 0.005 at alpha 0.05. Sorted, 0.005 <= 0.05/4 and 0.01 <= 0.05/3 are
    rejected, and 0.03 > 0.05/2 stops the procedure. Adjusted p-values, by hand:
    4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(1 x 0.04, 0.06) = 0.06."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []
    family = [{"delta": 0.01, "p_value": p} for p in (0.01, 0.04, 0.03, 0.005)]
    adjust(family, alpha=0.05)
    assert [r["verdict"] for r in family] == ["better", NO_DIFFERENCE, NO_DIFFERENCE, "better"]
    assert {r["correction"] for r in family} == {"holm"}
    # Each of the four is significant alone: the correction changed two verdicts.
    assert all(r["p_value"] < 0.05 for r in family)


def test_a_sixteen_member_grid_of_null_recipes_calls_nothing_better() -> None:
    """The issue's arithmetic: 16 recipes that are the baseline plus noise. Uncorrected,
    some raw p falls below 0.05 by chance (here: by construction of the seed); Holm's
    adjusted p does not, so no verdict is a false discovery."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.2, 0.6, 50)
    family = []
    for _ in range(16):
        ours = base + rng.normal(0, 0.05, 50)
        family.append(
            compare_replicates(
                [_per_query(list(ours))], [_per_query(list(base))], 0.05,
                EvaluateConfig(permutations=2000),
            )["ndcg_at_10"]
        )  # fmt: skip
    assert any(r["p_value"] < 0.05 for r in family), [r["p_value"] for r in family]
    adjust(family, 0.05)
    assert all(r["verdict"] == NO_DIFFERENCE for r in family), [r["p_adjusted"] for r in family]


def test_seed_agreement_rule() -> None:
    """Every seed's own delta must have the recipe's sign; a zero one does not; one seed
    cannot be tested."""
    assert seeds_agree(0.02, [0.01, 0.03, 0.02]) is True
    assert seeds_agree(-0.02, [-0.01, -0.03]) is True
    assert seeds_agree(0.02, [0.07, -0.001, 0.01]) is False
    assert seeds_agree(0.02, [0.03, 0.0]) is False
    assert seeds_agree(0.02, [0.02]) is None
    assert verdict(0.02, 0.001, 0.05, [0.02]) == "better (1 seed)"
    assert verdict(-0.02, 0.001, 0.05, [-0.02]) == "worse (1 seed)"
    assert verdict(0.02, 0.001, 0.05, [0.05, -0.01]) == SEEDS_DISAGREE
    assert verdict(0.02, 0.001, 0.05, [0.01, 0.03]) == "better"
    assert verdict(0.02, 0.001, 0.05) == "better"  # a single run: nothing about seeds
    assert verdict(0.02, 0.05, 0.05, [0.01, 0.03]) == NO_DIFFERENCE  # p must be below alpha


def test_one_lucky_seed_does_not_make_a_recipe_better() -> None:
    """Three seeds of a recipe: one lucky seed gains 0.09 on every query, the other two lose
    0.01. The recipe's per-query mean (+0.023 on every query) is significant, and the lucky
    seed alone would be called better; the seeds disagree, so the recipe is not."""
    rng = random.Random(11)
    base = [rng.uniform(0.2, 0.6) for _ in range(40)]
    lucky = _per_query([b + 0.09 + rng.uniform(-0.005, 0.005) for b in base])
    unlucky = [_per_query([b - 0.01 + rng.uniform(-0.005, 0.005) for b in base]) for _ in "ab"]
    baseline = [_per_query(base)]

    recipe = compare_replicates([lucky, *unlucky], baseline, 0.05)["ndcg_at_10"]
    assert recipe["p_value"] < 0.05 and recipe["delta"] > 0.02
    assert recipe["seeds"] == 3 and recipe["seeds_agree"] is False
    assert [d > 0 for d in recipe["seed_deltas"]] == [True, False, False]
    assert recipe["verdict"] == SEEDS_DISAGREE
    assert recipe["value"] == pytest.approx(
        sum(sum(q["ndcg_at_10"] for q in s.values()) / 40 for s in [lucky, *unlucky]) / 3,
        abs=1e-6,
    )

    alone = compare_replicates([lucky], baseline, 0.05)["ndcg_at_10"]
    assert alone["verdict"] == "better (1 seed)"

    steady = [_per_query([b + 0.02 + rng.uniform(-0.005, 0.005) for b in base]) for _ in "abc"]
    assert compare_replicates(steady, baseline, 0.05)["ndcg_at_10"]["verdict"] == "better"
    # Holm keeps the seed rule: the family's adjusted verdicts still need agreeing seeds.
    family = [
        compare_replicates([lucky, *unlucky], baseline, 0.05)["ndcg_at_10"],
        compare_replicates(steady, baseline, 0.05)["ndcg_at_10"],
    ]
    adjust(family, 0.05)
    assert [r["verdict"] for r in family] == [SEEDS_DISAGREE, "better"]
