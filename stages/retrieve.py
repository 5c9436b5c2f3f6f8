"""Stage retrieve: the top retrieve.top_k documents of every test query, as a TREC run.

``retrieve.mode`` is ``dense`` (the Faiss index), ``bm25`` or ``hybrid``. What is chosen on
the dev split (a hybrid's fusion parameter, the dense run's pseudo-relevance feedback) is
chosen there before the test queries are touched, and recorded in the metrics file. Feedback
documents come from the best first pass there is: the fused run in hybrid mode.
"""

from pathlib import Path

from irtune.backends import load_encoder
from irtune.beir import read_beir
from irtune.bm25 import bm25_search
from irtune.errors import DataError
from irtune.index import INDEX, read_index
from irtune.io import Run, write_json, write_trec_run
from irtune.retrieve import (
    choose_fusion,
    choose_prf,
    encode_queries,
    feedback_rows,
    fuse,
    prf_grid,
    rocchio,
    search,
)
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
        help="mode, and what was chosen on dev (fusion, feedback) with its dev figures (JSON)",
    )
    return parser


def _subset(run: Run, qids) -> Run:
    return {qid: run.get(qid, {}) for qid in qids}


def main(args, cfg):
    rc, test_split, dev_split = cfg.retrieve, cfg.dataset.test_split, cfg.dataset.dev_split
    hybrid = rc.mode == "hybrid"
    prf = rc.prf and rc.mode != "bm25"
    # 1. The queries: the test split, and dev too when a parameter is chosen on dev.
    on_dev = hybrid or prf
    dataset = read_beir(args.data, [test_split, dev_split] if on_dev else [test_split])
    test_queries = dataset.split_queries(test_split)
    queries = {**dataset.split_queries(dev_split), **test_queries} if on_dev else test_queries
    dev_qrels = dataset.qrels[dev_split] if on_dev else {}
    metrics = {"mode": rc.mode, "top_k": rc.top_k}
    grid = rc.fusion_weights if rc.fusion == "wsum" else rc.rrf_ks

    # 2. The first pass: the dense run, and the BM25 run.
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
        qids = list(queries)
        emb = encode_queries(model, queries, rc.batch_size)
        dense = search(index, doc_ids, qids, emb, rc.top_k)
    if rc.mode in ("bm25", "hybrid"):
        sparse = bm25_search(dataset.corpus, queries, rc.top_k, rc.bm25_k1, rc.bm25_b)

    def dev_fusion(dense_run):
        """A hybrid's fusion parameter for ``dense_run``, chosen on dev."""
        return choose_fusion(
            _subset(dense_run, dev_qrels),
            _subset(sparse, dev_qrels),
            dev_qrels,
            rc.fusion,
            grid,
            rc.top_k,
            cfg.evaluate,
        )

    # 3. Pseudo-relevance feedback, if dev finds it helps: each query moves toward the top
    #    documents of the best first pass there is (a hybrid's fused run beats the dense
    #    one), and the dense search runs again. In hybrid mode the first fusion's parameter
    #    is chosen on dev first, and (k, beta) by the dev NDCG of the fused run.
    if prf:
        first_pass = combine = None  # dense mode: the dense search's own top documents
        if hybrid:
            first = dev_fusion(dense)
            first_pass = fuse(dense, sparse, rc.fusion, first.param, rc.top_k)
            sparse_dev = _subset(sparse, dev_qrels)

            def combine(run):
                return fuse(run, sparse_dev, rc.fusion, first.param, rc.top_k)

            metrics |= {
                "prf_first_pass": "hybrid",
                f"prf_first_pass_{first.param_name}": first.param,
            }
        dev_rows = [i for i, q in enumerate(qids) if q in dev_qrels]
        feedback = choose_prf(
            index,
            doc_ids,
            [qids[i] for i in dev_rows],
            emb[dev_rows],
            dev_qrels,
            prf_grid(rc.prf_ks, rc.prf_betas),
            rc.top_k,
            cfg.evaluate,
            first_pass=None if first_pass is None else _subset(first_pass, dev_qrels),
            combine=combine,
        )
        rows = None if first_pass is None else feedback_rows(first_pass, qids, doc_ids, feedback.k)
        emb = rocchio(index, emb, feedback.k, feedback.beta, rows)
        dense = search(index, doc_ids, qids, emb, rc.top_k)
        metrics |= {
            "prf_k": feedback.k,
            "prf_beta": feedback.beta,
            f"dev_{feedback.metric}_prf_grid": feedback.grid,
        }

    # 4. A hybrid's fusion, chosen on dev, of the final dense run and the BM25 run.
    if hybrid:
        test_qids = dataset.qrels[test_split]
        choice = dev_fusion(dense)
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
        run = _subset(dense if dense is not None else sparse, test_queries)
    write_trec_run(args.out, run, tag=f"irtune-{rc.mode}")
    if args.metrics is not None:
        write_json(args.metrics, metrics)


if __name__ == "__main__":
    run_stage("retrieve", build_parser(), main)
