"""Send the MLflow runs that could not be logged when their pipeline ran (``make sync``).

Usage: ``python -m irtune.sync [--uri URI]``. Sending twice never duplicates a run: each
record carries a run key that the store is searched for first.
"""

from __future__ import annotations

import argparse
import logging
import sys

from irtune.config import TrackingConfig
from irtune.tracking import pending_dir, sync

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="send to this store instead of each run's own")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sent, pending = sync(TrackingConfig(uri=args.uri) if args.uri else None)
    log.info("Sent %d run(s) from %s; %d still pending", sent, pending_dir(), pending)
    sys.exit(1 if pending else 0)


if __name__ == "__main__":
    main()
