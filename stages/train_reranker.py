"""Stage train_reranker: train the in-domain cross-encoder on the train split, when
rerank.model is "trained" (otherwise it leaves a note saying why not)."""

from pathlib import Path

from irtune.beir import read_beir
from irtune.devices import claim_devices
from irtune.io import write_json
from irtune.reranker import train_reranker, wanted
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--out", type=Path, required=True, help="the cross-encoder's folder")
    parser.add_argument("--metrics", type=Path, required=True, help="training summary (JSON)")
    return parser


def main(args, cfg):
    # Every split when training: a doc judged for a query anywhere is never its negative.
    dataset = None if wanted(cfg) else read_beir(args.data, cfg.dataset.splits, fold_titles=True)
    with claim_devices(0 if dataset is None else 1, "train_reranker"):
        summary = train_reranker(dataset, cfg, args.out)
    write_json(args.metrics, summary)


if __name__ == "__main__":
    run_stage("train_reranker", build_parser(), main)
