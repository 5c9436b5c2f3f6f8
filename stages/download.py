"""Stage download: fetch the BEIR dataset (hub, zip URL or local folder) into data/raw.

Validates what it reads (unique ids, qrels pointing at known docs and queries) and records
the counts.
"""

from pathlib import Path

from irtune.download import download
from irtune.io import write_json
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="BEIR folder to write")
    parser.add_argument("--metrics", type=Path, required=True, help="counts (JSON)")
    return parser


def main(args, cfg):
    counts = download(cfg.dataset, args.out)
    write_json(args.metrics, counts)


if __name__ == "__main__":
    run_stage("download", build_parser(), main)
