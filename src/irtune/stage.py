"""What every stage script shares: argument parsing, logging, config loading, timing, and
turning an :class:`~irtune.errors.IrtuneError` into one clear message and exit code 1.

A stage gets its config scoped to the params ``dvc.yaml`` lists for it
(:func:`irtune.pipeline.stage_config`), and says which ``irtune`` it runs: ``dvc.yaml``
runs every stage with ``PYTHONPATH=src``, so a queued experiment runs the library files of
its own copy of the repository, the files its ``dvc.lock`` hashes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import irtune
from irtune.config import Config, ScopedConfig, load_config
from irtune.errors import IrtuneError
from irtune.pipeline import DVC_YAML, stage_config

log = logging.getLogger("irtune")


def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the option every stage takes: ``--params``."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="composed params file (default: params.yaml)",
    )
    return parser


def setup_logging() -> None:
    """Log to stderr with timestamps; quieten chatty libraries."""
    logging.basicConfig(
        level=os.environ.get("IRTUNE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "alembic", "mlflow", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_stage(
    name: str,
    parser: argparse.ArgumentParser,
    main: Callable[[argparse.Namespace, Config | ScopedConfig], None],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse arguments, load the config (scoped to the stage's params), run ``main`` and
    log its wall time.

    Exits with status 1 and a one-line message (no traceback) on an IrtuneError or an
    OSError (disk full, permission denied).
    """
    setup_logging()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    log.info("%s: irtune %s from %s", name, irtune.__version__, Path(irtune.__file__).parent)
    try:
        cfg = stage_config(load_config(args.params), name, args.params.parent / DVC_YAML)
        main(args, cfg)
    except IrtuneError as exc:
        log.error("%s failed: %s", name, exc)
        sys.exit(1)
    except OSError as exc:
        # Disk full, permission denied...: atomic outputs mean nothing half-written is left.
        where = f"{exc.filename}: " if exc.filename else ""
        log.error("%s failed: %s%s", name, where, exc.strerror or exc)
        sys.exit(1)
    log.info("%s done in %.1fs", name, time.perf_counter() - start)
