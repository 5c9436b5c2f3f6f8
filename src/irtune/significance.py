"""Is a run really better than its baseline? Paired tests per query, bootstrap intervals, Holm's
correction across a sweep, and the verdict rule over training seeds.

Every comparison pairs the two sides query by query (both are scored on the same judged
queries) and asks about the mean per-query difference, ``delta``:

- **The test** (``evaluate.test``), two-sided: ``permutation``, the paired randomization
  test Smucker, Allan and Carterette (CIKM 2007) recommend for IR, as
  :func:`scipy.stats.permutation_test` with ``permutation_type="samples"`` on the per-query
  differences (under the null hypothesis each difference is as likely to have either sign:
  ``evaluate.permutations`` random sign flips, seeded by ``evaluate.resample_seed``, exact
  enumeration when there are fewer flips than that); or ``ttest``, Student's paired t-test
  (:func:`scipy.stats.ttest_rel`).
- **The interval**: a 95% bootstrap confidence interval of ``delta``, resampling queries
  (:func:`scipy.stats.bootstrap`, BCa, ``evaluate.bootstrap_resamples`` resamples, seeded).
- **The correction**: a sweep tests each recipe against the sweep's baseline; that family
  of p-values is adjusted with Holm's step-down method
  (:func:`statsmodels.stats.multitest.multipletests`), and verdicts read the adjusted p.
  One experiment tested against zero-shot (the evaluate stage, ``make compare``) is one
  comparison per metric: its correction is ``none``.
- **Seeds**: a recipe trained with several seeds is scored per query as the mean over its
  seeds, and its seeds *agree* when every seed's own mean delta against the baseline has
  the sign of the recipe's delta (none is zero or of the other sign).

The verdict, at significance level ``alpha``:

- ``better`` / ``worse``: the (adjusted) p is below alpha, and, for a recipe of two or more
  seeds, the seeds agree;
- ``better (1 seed)`` / ``worse (1 seed)``: a recipe of one seed with p below alpha, whose
  seeds' agreement could not be tested;
- ``seeds disagree``: p is below alpha but a seed's own delta is zero or of the other sign
  (one lucky seed carried the mean);
- ``no significant difference``: p is alpha or above.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from irtune.config import EvaluateConfig

#: Query id -> metric -> value, as the evaluate stage writes ``per_query.json``.
PerQuery = dict[str, dict[str, float]]

CONFIDENCE = 0.95
BETTER, WORSE = "better", "worse"
NO_DIFFERENCE = "no significant difference"
SEEDS_DISAGREE = "seeds disagree"
ONE_SEED = " (1 seed)"
#: The verdict rule in one sentence, for reports.
RULE = (
    "`better`/`worse` when the adjusted p is below alpha and every seed's own Δ has the "
    "recipe's sign; `seeds disagree` when p is below alpha but a seed's Δ does not; "
    "`(1 seed)` when a recipe has one seed, so its seeds' agreement is untested"
)
TEST_NAMES = {
    "permutation": "paired randomization test",
    "ttest": "paired t-test",
}


def describe(cfg: EvaluateConfig) -> str:
    """The test in words: ``paired randomization test (10000 sign flips)``."""
    if cfg.test == "permutation":
        return f"{TEST_NAMES['permutation']} ({cfg.permutations} sign flips)"
    return TEST_NAMES[cfg.test]


def method(cfg: EvaluateConfig, correction: str = "none") -> dict[str, Any]:
    """How verdicts were reached, as the JSON outputs record it."""
    out: dict[str, Any] = {"alpha": cfg.alpha, "test": cfg.test}
    if cfg.test == "permutation":
        out["permutations"] = cfg.permutations
    return out | {
        "correction": correction,
        "confidence": CONFIDENCE,
        "bootstrap_resamples": cfg.bootstrap_resamples,
        "resample_seed": cfg.resample_seed,
    }


def p_value(ours: np.ndarray, theirs: np.ndarray, cfg: EvaluateConfig) -> float:
    """Two-sided p-value of the paired ``cfg.test`` of ``ours`` against ``theirs``.

    Identical sides give 1 (no difference at all; the t statistic would be undefined).
    """
    from scipy import stats

    diffs = ours - theirs
    if not diffs.any():
        return 1.0
    if cfg.test == "ttest":
        return float(stats.ttest_rel(ours, theirs).pvalue)
    result = stats.permutation_test(
        (diffs,),
        np.mean,
        permutation_type="samples",  # one sample: the sign of each difference is flipped
        vectorized=True,
        n_resamples=cfg.permutations,
        alternative="two-sided",
        rng=cfg.resample_seed,
    )
    return float(result.pvalue)


def bootstrap_ci(diffs: np.ndarray, cfg: EvaluateConfig) -> tuple[float, float]:
    """The 95% bootstrap confidence interval (BCa) of the mean of per-query ``diffs``,
    resampling queries. Constant differences give the point interval ``(d, d)``."""
    from scipy import stats

    if np.all(diffs == diffs[0]):
        return float(diffs[0]), float(diffs[0])
    result = stats.bootstrap(
        (diffs,),
        np.mean,
        vectorized=True,
        n_resamples=cfg.bootstrap_resamples,
        confidence_level=CONFIDENCE,
        method="BCa",
        rng=cfg.resample_seed,
    )
    low, high = result.confidence_interval
    if not (math.isfinite(low) and math.isfinite(high)):  # BCa degenerate: percentile
        low, high = np.percentile(result.bootstrap_distribution, [2.5, 97.5])
    return float(low), float(high)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (statsmodels' ``multipletests``),
    in the given order. An empty family gives an empty list."""
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(p_values, method="holm")[1]]


def seeds_agree(delta: float, seed_deltas: list[float]) -> bool | None:
    """Whether every seed's own delta has the sign of the recipe's ``delta`` (a zero one does
    not); None with fewer than two seeds, where agreement cannot be tested."""
    if len(seed_deltas) < 2:
        return None
    return all(d != 0 and (d > 0) == (delta > 0) for d in seed_deltas)


def verdict(delta: float, p: float, alpha: float, seed_deltas: list[float] | None = None) -> str:
    """The verdict of one comparison (see the module's docstring).

    Args:
        delta: The recipe's mean delta.
        p: Its p-value, adjusted when it belongs to a family.
        alpha: The significance level.
        seed_deltas: Each seed's own delta, for a recipe; None for a single run, whose
            verdict says nothing about seeds.
    """
    if not p < alpha or delta == 0:
        return NO_DIFFERENCE
    word = BETTER if delta > 0 else WORSE
    if seed_deltas is None:
        return word
    agree = seeds_agree(delta, seed_deltas)
    if agree is None:
        return word + ONE_SEED
    return word if agree else SEEDS_DISAGREE


def _matrix(sides: list[PerQuery], qids: list[str], metric: str) -> np.ndarray:
    """Seeds x queries."""
    return np.array([[side[q][metric] for q in qids] for side in sides], dtype=float)


def compare_replicates(
    replicates: list[PerQuery],
    baseline: list[PerQuery],
    alpha: float,
    cfg: EvaluateConfig | None = None,
    metrics: list[str] | None = None,
    seeds: bool = True,
) -> dict[str, dict[str, Any]]:
    """Compare a recipe's replicates with the baseline's, per metric, query by query.

    Each side's per-query score is the mean over its replicates (seeds); the test and the
    interval are on those means. The verdict reads the raw p: :func:`adjust` redoes it for
    a family.

    Args:
        replicates: The recipe's per-query metrics, one per seed.
        baseline: The baseline's, one per seed (zero-shot: one).
        alpha: Significance level.
        cfg: The test, resamples and seed (``evaluate``); None: the defaults.
        metrics: Which metrics; None: all of the first replicate's.
        seeds: Whether the replicates are a recipe's seeds (the verdict then says whether
            they agree, or that one seed could not tell); False for a single run.

    Returns:
        metric -> ``{"value", "baseline", "delta", "ci_low", "ci_high", "p_value", "test",
        "correction", "verdict"}``, plus ``{"seeds", "seed_deltas", "seeds_agree"}`` for a
        recipe (``seeds``).

    Raises:
        ValueError: If a side is empty or the sides were scored on different queries.
    """
    cfg = cfg or EvaluateConfig()
    if not replicates or not baseline:
        raise ValueError("nothing to compare: a side has no run")
    qids = sorted(replicates[0])
    if any(sorted(side) != qids for side in replicates + baseline):
        raise ValueError("the run and the baseline were scored on different queries")
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics or list(replicates[0][qids[0]]):
        ours_by_seed = _matrix(replicates, qids, metric)
        ours, theirs = ours_by_seed.mean(axis=0), _matrix(baseline, qids, metric).mean(axis=0)
        value, base = float(ours.mean()), float(theirs.mean())
        delta = value - base
        p = p_value(ours, theirs, cfg)
        low, high = bootstrap_ci(ours - theirs, cfg)
        seed_deltas = [round(float(row.mean()) - base, 6) for row in ours_by_seed]
        result: dict[str, Any] = {
            "value": round(value, 6),
            "baseline": round(base, 6),
            "delta": round(delta, 6),
            "ci_low": round(low, 6),
            "ci_high": round(high, 6),
            "p_value": round(p, 6),
            "test": cfg.test,
            "correction": "none",
            "verdict": verdict(delta, p, alpha, seed_deltas if seeds else None),
        }
        if seeds:
            result |= {
                "seeds": len(replicates),
                "seed_deltas": seed_deltas,
                "seeds_agree": seeds_agree(delta, seed_deltas),
            }
        out[metric] = result
    return out


def adjust(family: list[dict[str, Any]], alpha: float) -> None:
    """Holm-adjust a family of comparisons of one metric (from :func:`compare_replicates`),
    in place: each gains ``p_adjusted``, its ``correction`` becomes ``holm``, and its
    verdict is redone on the adjusted p."""
    for result, adjusted in zip(family, holm([r["p_value"] for r in family]), strict=True):
        result["p_adjusted"] = round(adjusted, 6)
        result["correction"] = "holm"
        seed_deltas = result.get("seed_deltas") if "seeds" in result else None
        result["verdict"] = verdict(result["delta"], adjusted, alpha, seed_deltas)
