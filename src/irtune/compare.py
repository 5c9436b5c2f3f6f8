"""Compare two experiments per query: is one really better than the other?

The evaluate stage tests every run against the zero-shot base model. Which of two recipes is
better, or how much a recipe adds on top of a retrieval trick that helps the base model too,
needs the same paired test between any two runs::

    python -m irtune.compare cpu-best zero-shot-prf          # or: make compare A=... B=...
    python -m irtune.compare cpu-best workspace --run rerank

Each side is a DVC experiment name (as ``dvc exp show`` lists it), any git revision, or
``workspace``. Its per-query metrics, the evaluate stage's ``--per-query`` output, are read
through DVC from its cache, so nothing has to be checked out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from irtune.errors import IrtuneError
from irtune.evaluate import compare
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
    a: str, b: str, run: str = "retrieve", alpha: float = 0.05, root: Path = Path(".")
) -> dict[str, dict[str, float | str]]:
    """Paired t-test per metric of ``a``'s ``run`` against ``b``'s (``b`` is the baseline).

    Raises:
        IrtuneError: If a side lacks ``run`` or the two were scored on different queries.
    """
    sides = {name: load_per_query(name, root) for name in (a, b)}
    for name, data in sides.items():
        if run not in data:
            raise IrtuneError(f"{name}: no {run!r} run in its per-query metrics ({list(data)})")
    try:
        return compare(sides[a][run], sides[b][run], alpha)
    except ValueError as exc:
        raise IrtuneError(f"{a} vs {b}: {exc}") from None


def markdown(a: str, b: str, run: str, result: dict[str, dict[str, float | str]]) -> str:
    """The comparison as a Markdown table, one row per metric."""
    lines = [
        f"{run}: {a} vs {b} (paired two-sided t-test per query)",
        "",
        f"| metric | {a} | {b} | delta | p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for metric, r in result.items():
        lines.append(
            f"| {metric} | {r['value']:.4f} | {r['baseline']:.4f} | {r['delta']:+.4f} "
            f"| {r['p_value']:.3g} | {r['verdict']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m irtune.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("a", help="experiment name, git revision or 'workspace'")
    parser.add_argument("b", help="the one to compare against (the baseline)")
    parser.add_argument("--run", default="retrieve", choices=["retrieve", "rerank"])
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args(argv)
    try:
        result = compare_experiments(args.a, args.b, args.run, args.alpha)
    except IrtuneError as exc:
        parser.exit(2, f"error: {exc}\n")
    sys.stdout.write(markdown(args.a, args.b, args.run, result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
