"""Stage train: fine-tune the bi-encoder from the base model for the full epoch count."""

import tempfile
from dataclasses import asdict
from pathlib import Path

from irtune.beir import read_beir
from irtune.io import write_json
from irtune.prepare import read_rows
from irtune.stage import run_stage, stage_parser
from irtune.train import train


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (dev split)")
    parser.add_argument("--rows", type=Path, required=True, help="training rows (JSON lines)")
    parser.add_argument("--out", type=Path, required=True, help="trained model folder")
    parser.add_argument(
        "--history",
        type=Path,
        required=True,
        help="summary, loss curve and per-epoch dev curve (JSON)",
    )
    return parser


def main(args, cfg):
    dataset = read_beir(args.data, [cfg.dataset.train_split, cfg.dataset.dev_split])
    rows = read_rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="irtune-train-") as work_dir:
        result = train(rows, dataset, cfg, args.out, Path(work_dir))
    write_json(args.history, asdict(result))


if __name__ == "__main__":
    run_stage("train", build_parser(), main)
