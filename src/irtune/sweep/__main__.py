"""``python -m irtune.sweep``: run a named sweep, or (re)write its report.

Usage::

    python -m irtune.sweep run losses [OVERRIDE ...] [--jobs N]   # make sweep SWEEP=losses
    python -m irtune.sweep run losses 'sweep.seeds=[42,43,44]'     # make sweep ... SEEDS=42,43,44
    python -m irtune.sweep report losses [--sweep-id ID]           # make report SWEEP=losses
"""

from __future__ import annotations

import argparse
import logging
import sys

from irtune.errors import ConfigError
from irtune.sweep.queue import run
from irtune.sweep.report import write_report

log = logging.getLogger("irtune.sweep")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m irtune.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="queue, run and report a sweep")
    p_run.add_argument("name")
    p_run.add_argument("overrides", nargs="*", help="Hydra overrides for every member")
    p_run.add_argument("--jobs", type=int, default=1, help="DVC queue workers")
    p_run.add_argument("--poll", type=float, default=10.0, help="seconds between checks")
    p_report = sub.add_parser("report", help="(re)write a sweep's report from MLflow")
    p_report.add_argument("name")
    p_report.add_argument("--sweep-id", default="", help="default: the latest run of the sweep")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run(args.name, args.overrides, jobs=args.jobs, poll_s=args.poll)
        write_report(args.name, args.sweep_id)
        return 0
    except (ConfigError, RuntimeError) as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
