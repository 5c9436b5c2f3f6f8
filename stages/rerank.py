"""Stage rerank: rescore the top rerank.top_k candidates with a cross-encoder (0 = pass)."""

from pathlib import Path

from irtune.beir import read_beir
from irtune.devices import claim_devices
from irtune.rerank import rerank_run
from irtune.runs import read_trec_run, write_trec_run
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--run", type=Path, required=True, help="retrieval TREC run")
    parser.add_argument("--out", type=Path, required=True, help="reranked TREC run")
    return parser


def main(args, cfg):
    run = read_trec_run(args.run)
    # The corpus is only read when something is reranked.
    dataset = read_beir(args.data, [cfg.dataset.test_split]) if cfg.rerank.top_k else None
    with claim_devices(1 if cfg.rerank.top_k else 0, "rerank"):
        reranked = rerank_run(run, dataset, cfg)
    write_trec_run(args.out, reranked, tag="irtune-rerank")


if __name__ == "__main__":
    run_stage("rerank", build_parser(), main)
