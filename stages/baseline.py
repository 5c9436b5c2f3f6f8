"""Stage baseline: the zero-shot base model's dense run on the test queries.

Every experiment's runs are compared with it per query (in evaluate). It depends only on the
data and the base model, so DVC computes it once and reuses it across experiments.
"""

from pathlib import Path

from irtune.beir import read_beir
from irtune.dense import zero_shot_run
from irtune.devices import claim_devices
from irtune.runs import write_trec_run
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--out", type=Path, required=True, help="baseline TREC run")
    return parser


def main(args, cfg):
    dataset = read_beir(args.data, [cfg.dataset.test_split])
    with claim_devices(1 if cfg.evaluate.baseline else 0, "baseline"):
        run = zero_shot_run(dataset, cfg)
    write_trec_run(args.out, run, tag="irtune-zero-shot")


if __name__ == "__main__":
    run_stage("baseline", build_parser(), main)
