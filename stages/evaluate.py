"""Stage evaluate: score both runs on the test qrels and log the pipeline run to MLflow."""

from pathlib import Path

from irtune.beir import find_file, read_qrels
from irtune.evaluate import evaluate_run
from irtune.io import read_json, read_trec_run, write_json
from irtune.stage import run_stage, stage_parser
from irtune.tracking import build_record, log_record


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (test qrels)")
    parser.add_argument("--retrieve-run", type=Path, required=True, help="retrieval TREC run")
    parser.add_argument("--rerank-run", type=Path, required=True, help="reranked TREC run")
    parser.add_argument("--train-history", type=Path, required=True, help="train stage's JSON")
    parser.add_argument("--out", type=Path, required=True, help="mean metrics (JSON)")
    parser.add_argument("--per-query", type=Path, required=True, help="per-query metrics (JSON)")
    parser.add_argument("--record", type=Path, required=True,
                        help="the MLflow run's full record (JSON), kept for `make sync`")
    return parser


def main(args, cfg):
    qrels = read_qrels(find_file(args.data / "qrels", f"{cfg.dataset.test_split}.tsv"))
    metrics, per_query = {}, {}
    for name, path in (("retrieve", args.retrieve_run), ("rerank", args.rerank_run)):
        metrics[name], per_query[name] = evaluate_run(qrels, read_trec_run(path), cfg.evaluate)
    write_json(args.per_query, per_query)
    write_json(args.out, metrics)

    record = build_record(cfg, metrics, read_json(args.train_history),
                          artifacts=[args.out, args.per_query, args.train_history])
    write_json(args.record, record)
    if cfg.tracking.enabled:
        log_record(record, cfg.tracking)


if __name__ == "__main__":
    run_stage("evaluate", build_parser(), main)
