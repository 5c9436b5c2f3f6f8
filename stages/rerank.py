"""Stage rerank: rescore the top rerank.top_k candidates with a cross-encoder (0 = pass)."""

import logging
import shutil
from pathlib import Path

from irtune.beir import read_beir
from irtune.io import atomic_path, read_trec_run, write_trec_run
from irtune.rerank import load_cross_encoder, rerank
from irtune.stage import run_stage, stage_parser

log = logging.getLogger(__name__)


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--run", type=Path, required=True, help="retrieval TREC run")
    parser.add_argument("--out", type=Path, required=True, help="reranked TREC run")
    return parser


def main(args, cfg):
    if cfg.rerank.top_k == 0:
        log.info("rerank.top_k=0: passing %s through", args.run)
        with atomic_path(args.out) as tmp:
            shutil.copyfile(args.run, tmp)
        return
    dataset = read_beir(args.data, [cfg.dataset.test_split])
    model = load_cross_encoder(
        cfg.rerank.model, cfg.rerank.max_length, trust_remote_code=cfg.rerank.trust_remote_code
    )
    run = rerank(
        model,
        read_trec_run(args.run),
        dataset.queries,
        dataset.corpus,
        cfg.rerank.top_k,
        cfg.rerank.batch_size,
    )
    write_trec_run(args.out, run, tag="irtune-rerank")


if __name__ == "__main__":
    run_stage("rerank", build_parser(), main)
