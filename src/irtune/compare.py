"""Compare two experiments per query: is one really better than the other?

The evaluate stage tests every run against the zero-shot base model. Which of two recipes is
better, or how much a recipe adds on top of a retrieval trick that helps the base model too,
needs the same paired test between any two runs::

    python -m irtune.compare cpu-best zero-shot-prf          # or: make compare A=... B=...
    python -m irtune.compare cpu-best workspace --run rerank
    python -m irtune.compare seed42,seed43,seed44 zero-shot  # a recipe's seed replicates
    python -m irtune.compare my-exp my-exp --run rerank --run-b retrieve  # did reranking pay?

Each side is a DVC experiment name (as ``dvc exp show`` lists it), any git revision, or
``workspace``; or a comma-separated list of them, the replicates of one recipe over seeds,
scored per query as their mean and given the sweep report's verdict rule (its seeds must
agree). Its per-query metrics, the evaluate stage's ``--per-query`` output, are read
through DVC from its cache, so nothing has to be checked out. The statistics are the
evaluate stage's (:mod:`irtune.significance`): the paired randomization test (or
``--test ttest``) and a bootstrap 95% CI of each delta; one comparison per metric, so no
correction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from irtune.config import EvaluateConfig
from irtune.errors import IrtuneError
from irtune.pipeline import DVC_YAML, stage_option

WORKSPACE = "workspace"


def per_query_path(root: Path = Path(".")) -> str:
    """Where the evaluate stage writes per-query metrics, as ``dvc.yaml`` says.

    Raises:
        IrtuneError: If ``dvc.yaml`` has no evaluate stage with a ``--per-query`` argument.
    """
    return stage_option(root / DVC_YAML, "evaluate", "--per-query")


def load_per_query(name: str, root: Path = Path(".")) -> dict[str, dict[str, dict[str, float]]]:
    """Per-query metrics of experiment or revision ``name`` (``workspace``: the files here).

    Raises:
        IrtuneError: If DVC cannot find the file at that revision.
    """
    import dvc.api

    path = per_query_path(root)
    rev = None if name == WORKSPACE else name
    try:
        return json.loads(dvc.api.read(path, repo=str(root), rev=rev))
    except Exception as exc:  # DVC raises many types: unknown rev, missing cache, no file
        raise IrtuneError(f"{name}: cannot read {path} through DVC: {exc}") from None


def compare_experiments(
    a: str,
    b: str,
    run: str = "retrieve",
    alpha: float = 0.05,
    root: Path = Path("."),
    cfg: EvaluateConfig | None = None,
    run_b: str | None = None,
) -> dict[str, dict[str, float | str]]:
    """Paired test per metric of ``a``'s ``run`` against ``b``'s ``run_b`` (``b`` is the
    baseline; ``run_b`` None: ``run``). One experiment's reranked run against its own first
    stage is ``a == b``, ``run="rerank"``, ``run_b="retrieve"``.

    Either side may be a comma-separated list of experiments: a recipe's replicates over
    seeds (see :func:`irtune.significance.compare_replicates`).

    Raises:
        IrtuneError: If a side lacks its run or the two were scored on different queries.
    """
    from irtune.significance import compare_replicates

    sides: list[list] = []
    for side, side_run in ((a, run), (b, run_b or run)):
        sides.append([])
        for name in [n.strip() for n in side.split(",") if n.strip()]:
            data = load_per_query(name, root)
            if side_run not in data:
                raise IrtuneError(
                    f"{name}: no {side_run!r} run in its per-query metrics ({list(data)})"
                )
            sides[-1].append(data[side_run])
    seeds = any("," in side for side in (a, b))
    try:
        return compare_replicates(sides[0], sides[1], alpha, cfg, seeds=seeds)
    except ValueError as exc:
        raise IrtuneError(f"{a} vs {b}: {exc}") from None


def markdown(
    a: str,
    b: str,
    run: str,
    result: dict[str, dict[str, float | str]],
    cfg: EvaluateConfig | None = None,
) -> str:
    """The comparison as a Markdown table, one row per metric."""
    from irtune.significance import describe

    lines = [
        f"{run}: {a} vs {b} ({describe(cfg or EvaluateConfig())} per query, two-sided; "
        "95% bootstrap CI of the delta; no correction)",
        "",
        f"| metric | {a} | {b} | delta | 95% CI | p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric, r in result.items():
        lines.append(
            f"| {metric} | {r['value']:.4f} | {r['baseline']:.4f} | {r['delta']:+.4f} "
            f"| [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['p_value']:.3g} | {r['verdict']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m irtune.compare", description=__doc__.split("\n")[0]
    )
    defaults = EvaluateConfig()
    parser.add_argument(
        "a", help="experiment name, git revision or 'workspace'; or a comma-separated list: "
        "one recipe's seed replicates"
    )  # fmt: skip
    parser.add_argument("b", help="the one to compare against (the baseline), likewise")
    parser.add_argument("--run", default="retrieve", choices=["retrieve", "rerank"])
    parser.add_argument(
        "--run-b", choices=["retrieve", "rerank"], help="b's run (default: --run's)"
    )
    parser.add_argument("--alpha", type=float, default=defaults.alpha)
    parser.add_argument("--test", default=defaults.test, choices=["permutation", "ttest"])
    args = parser.parse_args(argv)
    cfg = EvaluateConfig(alpha=args.alpha, test=args.test)
    try:
        result = compare_experiments(
            args.a, args.b, args.run, args.alpha, cfg=cfg, run_b=args.run_b
        )
    except IrtuneError as exc:
        parser.exit(2, f"error: {exc}\n")
    run = args.run if args.run_b in (None, args.run) else f"{args.run} vs {args.run_b}"
    sys.stdout.write(markdown(args.a, args.b, run, result, cfg) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
