"""Stage evaluate: score both runs on the test qrels, compare them with the zero-shot
baseline per query, and log the pipeline run to MLflow."""

from pathlib import Path

from irtune.beir import find_file, read_qrels
from irtune.evaluate import evaluate_runs
from irtune.io import read_json, write_json
from irtune.plots import FINAL_RUN, per_query_delta
from irtune.runs import read_trec_run
from irtune.stage import run_stage, stage_parser
from irtune.tracking import build_record, log_record


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (test qrels)")
    parser.add_argument("--retrieve-run", type=Path, required=True, help="retrieval TREC run")
    parser.add_argument("--rerank-run", type=Path, required=True, help="reranked TREC run")
    parser.add_argument("--baseline-run", type=Path, required=True, help="zero-shot TREC run")
    parser.add_argument("--train-history", type=Path, required=True, help="train stage's JSON")
    parser.add_argument("--retrieve-metrics", type=Path, required=True, help="dev choices (JSON)")
    parser.add_argument("--rerank-metrics", type=Path, required=True, help="its choices (JSON)")
    parser.add_argument("--download-metrics", type=Path, required=True, help="data counts (JSON)")
    parser.add_argument("--model", type=Path, required=True, help="trained bi-encoder (logged)")
    parser.add_argument("--out", type=Path, required=True, help="mean metrics (JSON)")
    parser.add_argument("--significance", type=Path, required=True, help="tests (JSON)")
    parser.add_argument("--per-query", type=Path, required=True, help="per-query metrics (JSON)")
    parser.add_argument("--record", type=Path, required=True, help="the MLflow run (JSON)")
    parser.add_argument("--delta-plot", type=Path, required=True, help="per-query delta (DVC plot)")
    return parser


def main(args, cfg):
    qrels = read_qrels(find_file(args.data / "qrels", f"{cfg.dataset.test_split}.tsv"))
    runs = {"retrieve": read_trec_run(args.retrieve_run), "rerank": read_trec_run(args.rerank_run)}
    baseline = read_trec_run(args.baseline_run) if cfg.evaluate.baseline else None
    result = evaluate_runs(qrels, runs, baseline, cfg)
    write_json(args.per_query, result.per_query)
    write_json(args.significance, result.significance)
    write_json(args.out, result.metrics)
    delta = per_query_delta(qrels, result.per_query[FINAL_RUN], baseline, cfg.evaluate)
    write_json(args.delta_plot, delta)

    # One MLflow run, built from files on disk so cached upstream stages lose nothing; the
    # record stays on disk for `make sync` if the store cannot be reached.
    artifacts = [args.out, args.significance, args.per_query, args.train_history]
    artifacts += [args.download_metrics, args.rerank_metrics]
    record = build_record(
        cfg,
        result.metrics,
        result.significance,
        read_json(args.train_history),
        artifacts,
        read_json(args.retrieve_metrics),
        read_json(args.download_metrics),
        rerank_choices=read_json(args.rerank_metrics),
        data_dir=args.data,
        model_dir=args.model,
    )
    write_json(args.record, record)
    if cfg.tracking.enabled:
        log_record(record, cfg.tracking)


if __name__ == "__main__":
    run_stage("evaluate", build_parser(), main)
