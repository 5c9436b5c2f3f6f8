"""Stage retrieve: the top retrieve.top_k documents of every test query, as a TREC run.

``retrieve.mode`` is ``dense`` (the Faiss index), ``bm25`` or ``hybrid``; a hybrid's fusion
parameter is chosen on the dev split, and the choice is recorded in the metrics file.
"""

from pathlib import Path

from irtune.backends import load_encoder
from irtune.beir import read_beir
from irtune.bm25 import bm25_search
from irtune.errors import DataError
from irtune.index import INDEX, read_index
from irtune.io import Run, write_json, write_trec_run
from irtune.retrieve import choose_fusion, dense_search, fuse
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (test queries)")
    parser.add_argument("--model", type=Path, required=True, help="trained model folder")
    parser.add_argument("--index", type=Path, required=True, help="index folder")
    parser.add_argument("--out", type=Path, required=True, help="TREC run file")
    # Optional so that a pipeline started before the flag existed still runs to the end.
    parser.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help="mode, and a hybrid's fusion choice with its dev figures (JSON)",
    )
    return parser


def _subset(run: Run, qids) -> Run:
    return {qid: run.get(qid, {}) for qid in qids}


def main(args, cfg):
    rc, test_split, dev_split = cfg.retrieve, cfg.dataset.test_split, cfg.dataset.dev_split
    hybrid = rc.mode == "hybrid"
    dataset = read_beir(args.data, [test_split, dev_split] if hybrid else [test_split])
    queries = dataset.split_queries(test_split)
    if hybrid:
        # Both runs answer the dev queries too: the fusion parameter is chosen on them.
        queries = {**dataset.split_queries(dev_split), **queries}

    dense = sparse = None
    if rc.mode in ("dense", "hybrid"):
        index, doc_ids = read_index(args.index)
        model = load_encoder(
            str(args.model),
            backend=cfg.encode.backend,
            precision=cfg.encode.precision,
            trust_remote_code=cfg.model.trust_remote_code,
            max_seq_length=cfg.encode.max_seq_length,
        )
        dim = model.get_embedding_dimension()
        if dim is not None and dim != index.d:
            raise DataError(
                f"{args.index / INDEX}: the index holds {index.d}-dimensional vectors but the "
                f"model {args.model} embeds in {dim}: rebuild the index with this model"
            )
        dense = dense_search(model, index, doc_ids, queries, rc.top_k, rc.batch_size)
    if rc.mode in ("bm25", "hybrid"):
        sparse = bm25_search(dataset.corpus, queries, rc.top_k, rc.bm25_k1, rc.bm25_b)

    metrics = {"mode": rc.mode, "top_k": rc.top_k}
    if hybrid:
        dev_qrels, test_qids = dataset.qrels[dev_split], dataset.qrels[test_split]
        grid = rc.fusion_weights if rc.fusion == "wsum" else rc.rrf_ks
        choice = choose_fusion(
            _subset(dense, dev_qrels),
            _subset(sparse, dev_qrels),
            dev_qrels,
            rc.fusion,
            grid,
            rc.top_k,
            cfg.evaluate,
        )
        run = fuse(
            _subset(dense, test_qids), _subset(sparse, test_qids), rc.fusion, choice.param, rc.top_k
        )
        metrics |= {
            "fusion": rc.fusion,
            choice.param_name: choice.param,
            f"dev_{choice.metric}": choice.dev,
            f"dev_{choice.metric}_grid": choice.grid,
        }
    else:
        run = dense if dense is not None else sparse
    write_trec_run(args.out, run, tag=f"irtune-{rc.mode}")
    if args.metrics is not None:
        write_json(args.metrics, metrics)


if __name__ == "__main__":
    run_stage("retrieve", build_parser(), main)
