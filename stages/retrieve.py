"""Stage retrieve: the top retrieve.top_k documents of every test query, as a TREC run.

``retrieve.mode`` is ``dense`` (the Faiss index), ``bm25`` or ``hybrid``. What the recipe
chooses on the dev split (a hybrid's fusion, dense pseudo-relevance feedback) is recorded
with the dev figures behind it in the metrics file; see :mod:`irtune.retrieve`.
"""

from pathlib import Path

from irtune.beir import read_beir
from irtune.devices import claim_devices
from irtune.io import write_json
from irtune.retrieve import bm25_run, open_dense_index, retrieve, splits, uses_dense
from irtune.runs import write_trec_run
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (test queries)")
    parser.add_argument("--model", type=Path, required=True, help="trained model folder")
    parser.add_argument("--index", type=Path, required=True, help="index folder")
    parser.add_argument("--out", type=Path, required=True, help="TREC run file")
    parser.add_argument("--dev-out", type=Path, required=True, help="dev queries' run (TREC)")
    parser.add_argument(
        "--metrics",
        type=Path,
        required=True,
        help="mode, and what was chosen on dev (fusion, feedback) with its dev figures (JSON)",
    )
    return parser


def main(args, cfg):
    dataset = read_beir(args.data, splits(cfg))
    # BM25 first: building its index is the stage's largest transient, and the dense index is
    # read once that is freed, never beside it.
    sparse = bm25_run(dataset, cfg)
    with claim_devices(1 if uses_dense(cfg) else 0, "retrieve"):  # the query encoder
        dense = open_dense_index(args.index, args.model, cfg) if uses_dense(cfg) else None
        result = retrieve(dataset, cfg, dense, sparse)
    write_trec_run(args.out, result.run, tag=f"irtune-{cfg.retrieve.mode}")
    write_trec_run(args.dev_out, result.dev_run, tag=f"irtune-{cfg.retrieve.mode}")
    write_json(args.metrics, result.choices)


if __name__ == "__main__":
    run_stage("retrieve", build_parser(), main)
