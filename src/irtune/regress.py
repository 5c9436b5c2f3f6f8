"""Checked regressions: does each row of ``results.yaml`` still reproduce, metric by metric?

Usage::

    python -m irtune.regress                                # make regress
    python -m irtune.regress --row nfcorpus-zero-shot       # make regress ROW=nfcorpus-zero-shot
    python -m irtune.regress --rerun dataset.source=../shared/data/nfcorpus model.base=...
                                                            # make regress RERUN=1 OVERRIDES=...

A row is a DVC experiment named as the row. Its existing experiment is read through DVC
(``params.yaml`` and ``metrics/eval.json`` at its commit: nothing is checked out); a row
without one is run, ``dvc exp run -n <row> -S dataset=<dataset> -S <override>...``, and
``--rerun`` runs every selected row again with every stage forced (``dvc exp run -f``).
Trailing overrides apply to every row after its own: where the data and models are (a local
copy, offline), never the recipe.

An experiment counts only if its params are those its row composes to today: one run with
other params, or before ``conf/`` changed, fails on ``params`` with the keys that differ.
Every metric the row expects is then compared with the experiment's within the row's
tolerance and printed OK or FAIL; the exit status is 1 if anything failed. A row expecting
nothing yet prints what it measured, ready to paste into ``results.yaml``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irtune.errors import ConfigError, IrtuneError
from irtune.pipeline import DVC_YAML, stage_option
from irtune.results import RESULTS_FILE, Results, Row, load_results

log = logging.getLogger("irtune.regress")

#: Params that say where a run is logged, not what it computes: never compared.
UNCOMPARED = ("tracking.", "sweep.")


@dataclass(frozen=True)
class Experiment:
    """A DVC experiment, as git holds it (``refs/exps/<baseline>/<name>``)."""

    name: str
    commit: str
    baseline: str


@dataclass
class Check:
    """One line of the report: a metric of a row (or its params), and the verdict."""

    row: str
    metric: str
    status: str  # OK, FAIL, NEW (nothing expected yet), SKIP (superseded row)
    expected: float | None = None
    actual: float | None = None
    tolerance: float | None = None
    note: str = ""


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout


def find_experiment(name: str, root: Path = Path(".")) -> Experiment | None:
    """The experiment called ``name``: the one derived from HEAD, else the newest.

    DVC lets two baselines each have an experiment of the same name; the one made on the
    commit checked out is the one that ran today's code.
    """
    found = []
    lines = _git(
        root, "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)",
        "refs/exps/",
    )  # fmt: skip
    for line in lines.splitlines():
        commit, ref = line.split(" ", 1)
        parts = ref.split("/")  # refs exps ab cdef... name
        if len(parts) == 5 and parts[4] == name:
            found.append(Experiment(name, commit, parts[2] + parts[3]))
    head = _git(root, "rev-parse", "HEAD").strip()
    return next((e for e in found if e.baseline == head), found[0] if found else None)


def read_experiment(exp: Experiment, root: Path = Path(".")) -> tuple[dict, dict]:
    """``(params, metrics)``: the experiment's ``params.yaml`` and ``metrics/eval.json``
    (wherever ``dvc.yaml``'s evaluate stage writes it), read through DVC at its commit.

    Raises:
        IrtuneError: If DVC cannot read either file there.
    """
    import dvc.api
    import yaml

    eval_path = stage_option(root / DVC_YAML, "evaluate", "--out")
    out = []
    for path in ("params.yaml", eval_path):
        try:
            out.append(dvc.api.read(path, repo=str(root), rev=exp.commit))
        except Exception as exc:  # DVC raises many types: missing file, missing cache
            raise IrtuneError(f"experiment {exp.name}: cannot read {path}: {exc}") from None
    return yaml.safe_load(out[0]), json.loads(out[1])


def run_experiment(name: str, overrides: list[str], force: bool, root: Path = Path(".")) -> int:
    """``dvc exp run -n <name> [-f] -S <override>...`` in the workspace, its output shown as
    it comes; returns its exit status."""
    cmd = ["dvc", "exp", "run", "-n", name, *(["-f"] if force else [])]
    for override in overrides:
        cmd += ["-S", override]
    log.info("%s: %s", name, " ".join(cmd))
    sys.stdout.flush()
    return subprocess.run(cmd, cwd=root, check=False).returncode


def params_differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two params files (a row's composed params and
    an experiment's), each as ``key: <experiment's> (experiment) vs <row's> (row)``."""
    from irtune.config import flatten, validate

    try:
        theirs = flatten(validate(got))
    except ConfigError as exc:
        return [f"the experiment's params.yaml does not fit today's config: {exc}"]
    ours = flatten(validate(want))
    return [
        f"{key}: {theirs.get(key)!r} (experiment) vs {ours.get(key)!r} (row)"
        for key in sorted(ours.keys() | theirs.keys())
        if not key.startswith(UNCOMPARED) and ours.get(key) != theirs.get(key)
    ]


def compare_metrics(row: Row, metrics: dict[str, Any]) -> list[Check]:
    """Each metric ``row`` expects against the experiment's ``metrics/eval.json``."""
    measured = metrics.get(row.run, {})
    if row.expected is None:
        return [
            Check(row.name, m, "NEW", actual=v, note="nothing expected yet")
            for m, v in measured.items()
        ]
    checks = []
    for metric, expected in row.expected.items():
        actual = measured.get(metric)
        ok = actual is not None and abs(actual - expected) <= row.tolerance + 1e-12
        note = "" if actual is not None else f"no {row.run}.{metric} in the experiment's metrics"
        checks.append(
            Check(row.name, metric, "OK" if ok else "FAIL", expected, actual, row.tolerance, note)
        )
    return checks


def check_row(
    row: Row, results: Results, extra: list[str], rerun: bool, root: Path = Path(".")
) -> list[Check]:
    """Read (or run) ``row``'s experiment and check it."""
    from irtune.compose import compose_params

    if row.superseded:
        return [Check(row.name, "-", "SKIP", note=f"superseded ({row.superseded})")]
    overrides = [f"dataset={row.dataset}", *results.overrides, *row.overrides, *extra]
    want = compose_params(overrides, root)  # fails before anything runs on a bad override
    exp = None if rerun else find_experiment(row.name, root)
    if exp is None:
        status = run_experiment(row.name, overrides, force=rerun, root=root)
        exp = find_experiment(row.name, root)
        if status != 0 or exp is None:
            return [Check(row.name, "run", "FAIL", note=f"`dvc exp run` exited {status}")]
        log.info("%s: ran experiment %s", row.name, exp.commit[:7])
    else:
        head = _git(root, "rev-parse", "HEAD").strip()
        where = "HEAD" if exp.baseline == head else f"{exp.baseline[:7]}, not HEAD"
        log.info("%s: read experiment %s (on %s)", row.name, exp.commit[:7], where)
    params, metrics = read_experiment(exp, root)
    checks = []
    differences = params_differences(want, params)
    if differences:
        note = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
        note += " (the OVERRIDES it ran with? else RERUN=1 runs the row again)"
        checks.append(Check(row.name, "params", "FAIL", note=note))
    return checks + compare_metrics(row, metrics)


def report(checks: list[Check]) -> str:
    """The checks as an aligned table, a line per metric, then a summary line."""
    width = max([len("row"), *(len(c.row) for c in checks)])
    lines = [f"{'row':<{width}}  {'metric':<14} {'expected':>9} {'actual':>9} {'delta':>9} "
             f"{'tol':>7}  result"]  # fmt: skip

    def num(value: float | None, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    for c in checks:
        delta = None
        if c.expected is not None and c.actual is not None:
            delta = round(c.actual - c.expected, 4) + 0.0  # as shown; + 0.0: no "-0.0000"
        line = (
            f"{c.row:<{width}}  {c.metric:<14} {num(c.expected):>9} {num(c.actual):>9} "
            f"{num(delta, '+.4f'):>9} {num(c.tolerance, 'g'):>7}  {c.status}"
        )
        lines.append(line + (f"  {c.note}" if c.note else ""))
    counts = {s: sum(c.status == s for c in checks) for s in ("OK", "FAIL", "NEW", "SKIP")}
    failed = sorted({c.row for c in checks if c.status == "FAIL"})
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(summary + (f"; failed: {', '.join(failed)}" if failed else ""))
    return "\n".join(lines) + "\n"


def measured_yaml(checks: list[Check]) -> str:
    """What each row expecting nothing yet measured, as its ``expected:`` line."""
    rows: dict[str, dict[str, float]] = {}
    for c in checks:
        if c.status == "NEW" and c.actual is not None:
            rows.setdefault(c.row, {})[c.metric] = round(c.actual, 4)
    return "".join(
        f"{name}:\n    expected: {{{', '.join(f'{k}: {v}' for k, v in values.items())}}}\n"
        for name, values in rows.items()
    )


def regress(
    rows: list[str],
    extra: list[str],
    rerun: bool = False,
    results_file: Path = RESULTS_FILE,
    root: Path = Path("."),
) -> list[Check]:
    """Check the named rows (all for none) of ``results_file``."""
    results = load_results(root / results_file)
    checks = []
    for row in results.select(rows):
        checks += check_row(row, results, extra, rerun, root)
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m irtune.regress", description=__doc__.split("\n")[0]
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every row (locations)")
    parser.add_argument(
        "--row", action="append", default=[], help="a row's name (repeat, or a,b); default: all"
    )
    parser.add_argument("--rerun", action="store_true", help="run every row again, all stages")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = [n for arg in args.row for n in arg.split(",") if n]
    try:
        checks = regress(names, args.overrides, args.rerun, args.results)
    except (IrtuneError, subprocess.CalledProcessError) as exc:
        log.error("%s", exc)
        return 2
    sys.stdout.write(report(checks))
    if new := measured_yaml(checks):
        sys.stdout.write(f"\nmeasured, for {args.results}:\n{new}")
    return 1 if any(c.status == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
