"""Stage rerank: rescore the top rerank.top_k candidates with a cross-encoder, fused with the
first stage as chosen on the dev run (0 = pass)."""

from pathlib import Path

from irtune.beir import read_beir
from irtune.devices import claim_devices
from irtune.io import write_json
from irtune.rerank import rerank_run
from irtune.runs import read_trec_run, write_trec_run
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--run", type=Path, required=True, help="retrieval TREC run")
    parser.add_argument("--dev-run", type=Path, required=True, help="dev queries' retrieval run")
    parser.add_argument("--reranker", type=Path, required=True, help="the trained cross-encoder")
    parser.add_argument("--out", type=Path, required=True, help="reranked TREC run")
    parser.add_argument("--metrics", type=Path, required=True, help="dev choices (JSON)")
    return parser


def main(args, cfg):
    run = read_trec_run(args.run)
    dataset = dev_run = None
    if cfg.rerank.top_k:  # the corpus is only read when something is reranked
        splits = [cfg.dataset.test_split, *([cfg.dataset.dev] if cfg.dataset.dev else [])]
        dataset = read_beir(args.data, splits)
        dev_run = read_trec_run(args.dev_run)
    with claim_devices(1 if cfg.rerank.top_k else 0, "rerank"):
        result = rerank_run(run, dataset, cfg, dev_run, trained=args.reranker)
    write_trec_run(args.out, result.run, tag="irtune-rerank")
    write_json(args.metrics, result.choices)


if __name__ == "__main__":
    run_stage("rerank", build_parser(), main)
