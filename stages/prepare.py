"""Stage prepare: build the training rows the chosen loss needs from the train qrels."""

from pathlib import Path

from irtune.beir import read_beir
from irtune.devices import claim_devices
from irtune.io import write_json, write_jsonl
from irtune.prepare import build_rows, uses_models
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--out", type=Path, required=True, help="training rows (JSON lines)")
    parser.add_argument("--metrics", type=Path, required=True, help="row counts (JSON)")
    return parser


def main(args, cfg):
    # Every split: a doc judged for a query anywhere is never that query's negative. Rows hold
    # documents as the texts they are encoded as: read so, mining's text -> id map and the
    # rows share the corpus' strings instead of copying them.
    dataset = read_beir(args.data, cfg.dataset.splits, fold_titles=True)
    with claim_devices(1 if uses_models(cfg) else 0, "prepare"):  # mining, labelling
        rows = build_rows(dataset, cfg)
    write_jsonl(args.out, rows)
    write_json(args.metrics, {"rows": len(rows), "columns": list(rows[0]) if rows else []})


if __name__ == "__main__":
    run_stage("prepare", build_parser(), main)
