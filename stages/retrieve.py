"""Stage retrieve: the top retrieve.top_k documents of every test query, as a TREC run."""

from pathlib import Path

from irtune.beir import read_beir
from irtune.index import read_index
from irtune.io import write_trec_run
from irtune.retrieve import dense_search
from irtune.stage import run_stage, stage_parser
from irtune.train import load_bi_encoder


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (test queries)")
    parser.add_argument("--model", type=Path, required=True, help="trained model folder")
    parser.add_argument("--index", type=Path, required=True, help="index folder")
    parser.add_argument("--out", type=Path, required=True, help="TREC run file")
    return parser


def main(args, cfg):
    dataset = read_beir(args.data, [cfg.dataset.test_split])
    index, doc_ids = read_index(args.index)
    model = load_bi_encoder(str(args.model), trust_remote_code=cfg.model.trust_remote_code)
    run = dense_search(
        model,
        index,
        doc_ids,
        dataset.split_queries(cfg.dataset.test_split),
        cfg.retrieve.top_k,
        cfg.retrieve.batch_size,
    )
    write_trec_run(args.out, run, tag="irtune-dense")


if __name__ == "__main__":
    run_stage("retrieve", build_parser(), main)
