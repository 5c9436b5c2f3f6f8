"""Stage baseline: the zero-shot base model's dense run on the test queries.

Every experiment's runs are compared with it per query (paired t-test in evaluate). It
depends only on the data and the base model, so DVC computes it once and reuses it across
experiments.
"""

import logging
from pathlib import Path

from irtune.beir import read_beir
from irtune.io import atomic_path, write_trec_run
from irtune.retrieve import exact_search
from irtune.stage import run_stage, stage_parser
from irtune.train import load_bi_encoder

log = logging.getLogger(__name__)


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--out", type=Path, required=True, help="baseline TREC run")
    return parser


def main(args, cfg):
    if not cfg.evaluate.baseline:
        log.info("evaluate.baseline=false: writing an empty baseline run")
        with atomic_path(args.out) as tmp:
            tmp.write_text("", encoding="utf-8")
        return
    dataset = read_beir(args.data, [cfg.dataset.test_split])
    # The base model exactly as published (its own max_seq_length): the true zero-shot.
    model = load_bi_encoder(cfg.model.base, trust_remote_code=cfg.model.trust_remote_code)
    run = exact_search(
        model,
        dataset.corpus,
        dataset.split_queries(cfg.dataset.test_split),
        # Deep enough for every reported cut-off, and independent of retrieve.top_k, so a
        # change there does not recompute the baseline.
        max(cfg.evaluate.ndcg_k, cfg.evaluate.recall_k, cfg.evaluate.mrr_k, cfg.evaluate.map_k),
        cfg.encode.batch_size,
        cfg.retrieve.batch_size,
    )
    write_trec_run(args.out, run, tag="irtune-zero-shot")


if __name__ == "__main__":
    run_stage("baseline", build_parser(), main)
