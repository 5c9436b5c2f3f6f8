"""Stage evaluate: score both runs on the test qrels, compare them with the zero-shot
baseline per query, and log the pipeline run to MLflow."""

import logging
from pathlib import Path

from irtune.beir import find_file, read_qrels
from irtune.evaluate import compare, evaluate_run
from irtune.io import read_json, read_trec_run, write_json
from irtune.stage import run_stage, stage_parser
from irtune.tracking import build_record, log_record

log = logging.getLogger(__name__)


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (test qrels)")
    parser.add_argument("--retrieve-run", type=Path, required=True, help="retrieval TREC run")
    parser.add_argument("--rerank-run", type=Path, required=True, help="reranked TREC run")
    parser.add_argument("--baseline-run", type=Path, required=True, help="zero-shot TREC run")
    parser.add_argument("--train-history", type=Path, required=True, help="train stage's JSON")
    # Optional so that a pipeline started before the flag existed still runs to the end.
    parser.add_argument(
        "--retrieve-metrics",
        type=Path,
        default=None,
        help="the retrieve stage's JSON: what it chose on dev goes to MLflow too",
    )
    parser.add_argument("--out", type=Path, required=True, help="mean metrics (JSON)")
    parser.add_argument(
        "--significance",
        type=Path,
        required=True,
        help="paired t-tests against the baseline (JSON)",
    )
    parser.add_argument("--per-query", type=Path, required=True, help="per-query metrics (JSON)")
    parser.add_argument(
        "--record",
        type=Path,
        required=True,
        help="the MLflow run's full record (JSON), kept for `make sync`",
    )
    return parser


def main(args, cfg):
    # 1. Mean and per-query metrics of both runs.
    qrels = read_qrels(find_file(args.data / "qrels", f"{cfg.dataset.test_split}.tsv"))
    metrics, per_query = {}, {}
    for name, path in (("retrieve", args.retrieve_run), ("rerank", args.rerank_run)):
        metrics[name], per_query[name] = evaluate_run(qrels, read_trec_run(path), cfg.evaluate)

    # 2. Significance against the zero-shot baseline: a regression is flagged as loudly as a gain.
    significance: dict = {}
    if cfg.evaluate.baseline:
        _, baseline = evaluate_run(qrels, read_trec_run(args.baseline_run), cfg.evaluate)
        significance = {"baseline": f"zero-shot {cfg.model.base}", "alpha": cfg.evaluate.alpha}
        for name in ("retrieve", "rerank"):
            significance[name] = compare(per_query[name], baseline, cfg.evaluate.alpha)
            for metric, result in significance[name].items():
                if result["verdict"] != "no significant difference":
                    level = logging.WARNING if result["verdict"] == "worse" else logging.INFO
                    log.log(
                        level,
                        "%s %s is significantly %s than zero-shot: %.4f vs %.4f (p=%.4g)",
                        name,
                        metric,
                        result["verdict"],
                        result["value"],
                        result["baseline"],
                        result["p_value"],
                    )
    write_json(args.per_query, per_query)
    write_json(args.significance, significance)
    write_json(args.out, metrics)

    # 3. One MLflow run, built from files on disk so cached upstream stages lose nothing.
    record = build_record(
        cfg,
        metrics,
        significance,
        read_json(args.train_history),
        artifacts=[args.out, args.significance, args.per_query, args.train_history],
        retrieve_choices=read_json(args.retrieve_metrics) if args.retrieve_metrics else None,
    )
    write_json(args.record, record)
    if cfg.tracking.enabled:
        log_record(record, cfg.tracking)


if __name__ == "__main__":
    run_stage("evaluate", build_parser(), main)
