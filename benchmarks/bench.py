"""irtune's benchmark suite: the product's code paths against the plain library calls.

This file is the runner. Each section answers one question in its own module beside it;
``--only`` picks some, comma-separated:

- ``encode`` (``bench_encode.py``): does irtune's encode path cost anything over a plain
  ``SentenceTransformer.encode``, and what does each ``encode.backend``/``encode.precision``
  pair trade (docs/s against test NDCG@10)?
- ``train`` (``bench_train.py``): does irtune's train stage cost anything over a plain
  SentenceTransformerTrainer script with the same loss, rows and settings? Pairs/s end to
  end and of the training loop alone.
- ``rerank`` (``bench_rerank.py``): does irtune's rerank path cost anything over a plain
  ``CrossEncoder.predict`` of the same pairs, and what does each ``rerank.backend``/
  ``rerank.precision`` pair trade (pairs/s against test NDCG@10)? Needs ``--reranker``, a
  cross-encoder the pipeline trained (none can be downloaded here); without it, it skips.
- ``gpu`` (``bench_gpu.py``): on a CUDA GPU, irtune's bf16 training against the plain
  trainer script and its half-precision encoding against a plain ``encode``; on a CPU it
  records why it skipped.
- ``orchestration`` (``bench_orchestration.py``): in a throwaway git + DVC copy of this
  repository on the tiny test assets, what does a no-op ``dvc repro`` cost, and which
  stages rerun after a change to ``rerank.top_k`` and to ``retrieve.top_k``?
- ``index`` (``bench_index.py``): what do irtune's HNSW and IVF indexes trade against flat
  search on synthetic clustered corpora: build time, queries/s, recall@10?
- ``scale`` (``bench_scale.py``): what does each stage of the pipeline, run as DVC runs it,
  cost in peak memory and wall time on a synthetic corpus of 500,000 documents and 10,000
  queries (a static-embedding model), beside the data sizes that bound it?

Every section records ``os.getloadavg()`` and ``os.cpu_count()`` before and after it ran
(``common.py``). The figures go to ``--out`` (default ``reports/bench/bench.json``) and a
table is printed. ``--quick`` shrinks every size for a smoke run (the tests use it on the
tiny assets).

Run ``make bench`` (full sizes on NFCorpus), or e.g.::

    PYTHONPATH=src python benchmarks/bench.py --data ../shared/data/nfcorpus --model <folder> \
        --only index
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench_encode import BACKENDS, bench_encode
from bench_gpu import bench_gpu
from bench_index import bench_index
from bench_orchestration import bench_orchestration
from bench_rerank import bench_rerank
from bench_scale import bench_scale
from bench_train import bench_train
from common import REPO, machine, section, wait_for_quiet

SECTIONS = ("encode", "train", "rerank", "gpu", "orchestration", "index", "scale")

log = logging.getLogger("bench")


def table(report: dict[str, Any]) -> str:
    """The figures as readable text."""
    lines = []
    m = report["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cpu_count']} CPUs, {m['memory_gib']} GiB")
    s = report["sections"]
    if "encode" in s:
        e = s["encode"]
        c = e["irtune_vs_plain"]
        lines += [
            "",
            f"ENCODE ({e['docs']} docs, batch {e['batch_size']}, {e['max_seq_length']} tokens; "
            f"load before {e['load_before']['loadavg']})",
            f"  plain SentenceTransformer.encode {c['plain_best_docs_per_s']:>8.1f} docs/s",
            f"  irtune encode (torch)            {c['irtune_best_docs_per_s']:>8.1f} docs/s  "
            f"ratio {c['ratio_irtune_over_plain']:.3f}",
            f"  {'backend':<16}{'docs/s':>9}{'x torch':>9}{'NDCG@10':>9}{'delta':>9}"
            f"{'cos min':>9}{'export s':>9}",
        ]
        for key, r in e["backends"].items():
            if "error" in r:
                lines.append(f"  {key:<16} error: {r['error'][:60]}")
                continue
            lines.append(
                f"  {key:<16}{r['docs_per_s']:>9.1f}{r.get('speedup_vs_torch', 0):>9.2f}"
                f"{r['ndcg_at_10']:>9.4f}{r.get('ndcg_delta_vs_torch', 0):>+9.4f}"
                f"{r['cosine_to_torch_min']:>9.4f}{r['load_and_export_s']:>9.1f}"
            )
    if "train" in s:
        t = s["train"]
        lines += [
            "",
            f"TRAIN ({t['pairs']} pairs, MNRL, batch {t['batch_size']}, {t['max_seq_length']} "
            f"tokens; load before {t['load_before']['loadavg']})",
            f"  {'':<12}{'irtune':>10}{'plain':>10}{'ratio':>8}   pairs/s",
            f"  {'end to end':<12}{t['irtune_pairs_per_s_end_to_end']:>10.2f}"
            f"{t['plain_pairs_per_s_end_to_end']:>10.2f}{t['ratio_end_to_end']:>8.3f}",
            f"  {'loop only':<12}{t['irtune_pairs_per_s_loop']:>10.2f}"
            f"{t['plain_pairs_per_s_loop']:>10.2f}{t['ratio_loop']:>8.3f}",
        ]
    if "rerank" in s:
        lines += rerank_table(s["rerank"])
    if "gpu" in s:
        lines += gpu_table(s["gpu"])
    if "orchestration" in s:
        o = s["orchestration"]
        lines += [
            "",
            f"ORCHESTRATION (load before {o['load_before']['loadavg']})",
            f"  no-op dvc repro: median {o['noop_repro_median_s']} s {o['noop_repro_s']}, "
            f"stages rerun: {o['noop_repro_reran'] or 'none'}",
        ]
        for key, change in o["changes"].items():
            lines.append(f"  change {key}: reran {change['reran']} ({change['seconds']} s)")
    if "index" in s:
        x = s["index"]
        lines += ["", f"INDEX (dim {x['dim']}, {x['queries']} queries, recall@10 vs flat)"]
        lines.append(f"  {'n':>8} {'index':<22}{'build s':>9}{'QPS':>10}{'x flat':>8}{'recall':>8}")
        for n, entry in x["sizes"].items():
            f = entry["flat"]
            lines.append(f"  {n:>8} {'flat':<22}{f['build_s']:>9.1f}{f['qps']:>10.1f}{1:>8.1f}")
            for kind in ("hnsw", "ivf"):
                label = f"M={entry[kind]['m']}" if kind == "hnsw" else f"nl={entry[kind]['nlist']}"
                for name, p in entry[kind]["search"].items():
                    lines.append(
                        f"  {n:>8} {kind + ' ' + label + ' ' + name.split('=')[1]:<22}"
                        f"{entry[kind]['build_s']:>9.1f}{p['qps']:>10.1f}"
                        f"{p['speedup_vs_flat']:>8.1f}{p['recall_at_10']:>8.4f}"
                    )
            lines.append(f"  {'':>8} load before {entry['load_before']['loadavg']}")
    if "scale" in s:
        lines += scale_table(s["scale"])
    return "\n".join(lines)


def scale_table(x: dict[str, Any]) -> list[str]:
    """The scale section's lines: each stage's wall and CPU time and peak beside its data's
    size."""
    sizes = ", ".join(f"{k} {v:.0f}" for k, v in x["sizes_mib"].items())
    lines = [
        "",
        f"SCALE ({x['docs']} docs, {x['queries']} queries, dim {x['dim']}; MiB: {sizes}; "
        f"load before {x['load_before']['loadavg']})",
        f"  {'stage':<10}{'wall s':>8}{'CPU s':>8}{'peak MiB':>10}{'floor':>8}{'data':>8}"
        f"{'needs':>8}  needs",
    ]
    for name, st in x["stages"].items():
        floor, data = (
            f"{st[k]:>8.0f}" if k in st else f"{'-':>8}" for k in ("floor_mib", "data_mib")
        )
        lines.append(
            f"  {name:<10}{st['wall_s']:>8.1f}{st['cpu_s']:>8.1f}{st['peak_rss_mib']:>10.0f}"
            f"{floor}{data}{st['needs_total_mib']:>8.0f}  {' + '.join(st['needs_mib'])}"
        )
    return lines


def rerank_table(r: dict[str, Any]) -> list[str]:
    """The rerank section's lines: irtune vs plain predict, then each backend."""
    if "skipped" in r:
        return ["", f"RERANK skipped: {r['skipped']}"]
    c = r["irtune_vs_plain"]
    lines = [
        "",
        f"RERANK ({r['pairs']} pairs: BM25 top {r['depth']} of {r['queries']} queries, NDCG@10 "
        f"{r['first_stage_ndcg_at_10']:.4f}; batch {r['batch_size']}, {r['max_length']} tokens; "
        f"load before {r['load_before']['loadavg']})",
        f"  plain CrossEncoder.predict       {c['plain_best_pairs_per_s']:>8.1f} pairs/s",
        f"  irtune rerank (torch)            {c['irtune_best_pairs_per_s']:>8.1f} pairs/s  "
        f"ratio {c['ratio_irtune_over_plain']:.3f}",
        f"  {'backend':<16}{'pairs/s':>9}{'x torch':>9}{'NDCG@10':>9}{'delta':>9}"
        f"{'max diff':>9}{'export s':>9}",
    ]
    for key, b in r["backends"].items():
        if "error" in b:
            lines.append(f"  {key:<16} error: {b['error'][:60]}")
            continue
        lines.append(
            f"  {key:<16}{b['pairs_per_s']:>9.1f}{b.get('speedup_vs_torch', 0):>9.2f}"
            f"{b['ndcg_at_10']:>9.4f}{b.get('ndcg_delta_vs_torch', 0):>+9.4f}"
            f"{b['max_abs_score_diff_vs_torch']:>9.4f}{b['load_and_export_s']:>9.1f}"
        )
    return lines


def gpu_table(g: dict[str, Any]) -> list[str]:
    """The GPU section's lines, or why it skipped."""
    if "skipped" in g:
        return ["", f"GPU skipped: {g['skipped']}"]
    t, e = g["train"], g["encode"]
    lines = [
        "",
        f"GPU ({g['device']} x{g['device_count']})",
        f"  train {t['pairs']} pairs, MNRL, batch {t['batch_size']}, {t['max_seq_length']} "
        f"tokens, {t['precision']}: irtune {t['irtune_pairs_per_s_loop']:.1f} pairs/s, plain "
        f"{t['plain_pairs_per_s_loop']:.1f}, ratio {t['ratio_loop']:.3f} (loop; end to end "
        f"{t['ratio_end_to_end']:.3f}); test NDCG@10 {t['test_ndcg_at_10']}",
        f"  encode {e['docs']} docs: irtune {e['irtune_vs_plain']['irtune_best_docs_per_s']:.1f}"
        f" docs/s, plain {e['irtune_vs_plain']['plain_best_docs_per_s']:.1f}",
    ]
    for key, b in e["backends"].items():
        if "error" not in b:
            lines.append(f"    {key:<12}{b['docs_per_s']:>10.1f} docs/s  NDCG@10 {b['ndcg_at_10']}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="BEIR folder (encode, train)")
    parser.add_argument("--model", help="bi-encoder folder or hub id (encode, train, gpu)")
    parser.add_argument("--reranker", help="cross-encoder folder (rerank; none: it skips)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "bench.json")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="LOAD",
        help="first wait (30 s polls, 15 min at most) for the 1-minute load to fall below LOAD",
    )
    parser.add_argument("--backends", default=",".join(f"{b}-{p}" for b, p in BACKENDS))
    parser.add_argument("--index-sizes", default="", help="e.g. 100000,1000000")
    parser.add_argument(
        "--scale-docs", type=int, default=0, help="scale: documents (500000; 5000 with --quick)"
    )
    parser.add_argument(
        "--scale-queries", type=int, default=0, help="scale: queries (10000; 200 with --quick)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="interleaved plain/irtune passes of encode and train (default: 2; 1 with --quick)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sections ``argv`` asks for, write the report to ``--out`` and return it."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("sentence_transformers", "transformers", "faiss", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; expected {SECTIONS}")
    if {"encode", "train", "gpu"} & set(only) and not (args.data and args.model):
        raise SystemExit("--data and --model are needed by the encode, train and gpu sections")
    if "rerank" in only and not args.data:
        raise SystemExit("--data is needed by the rerank section")
    backends = [tuple(b.rsplit("-", 1)) for b in args.backends.split(",") if b]
    quick = args.quick
    repeats = args.repeats or (1 if quick else 2)
    sizes = [int(x) for x in args.index_sizes.split(",") if x] or (
        [2_000, 10_000] if quick else [100_000, 1_000_000]
    )
    scale_docs = args.scale_docs or (5_000 if quick else 500_000)
    scale_queries = args.scale_queries or (200 if quick else 10_000)
    report: dict[str, Any] = {
        "command": shlex.join(
            ["python", "benchmarks/bench.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "sections": {},
    }
    if args.wait_quiet:
        report["wait_quiet"] = wait_for_quiet(args.wait_quiet, 30, 15 * 60)
    runs = {
        "encode": lambda: bench_encode(
            args.data,
            args.model,
            batch_size=16 if quick else 64,
            max_seq_length=64 if quick else 256,
            max_docs=300 if quick else 0,
            repeats=repeats,
            backends=backends,
        ),
        "train": lambda: bench_train(
            args.data,
            args.model,
            pairs=32 if quick else 512,
            batch_size=8 if quick else 32,
            max_seq_length=64 if quick else 128,
            repeats=repeats,
        ),
        # 100 queries x BM25's top 20 at 256 tokens (reranker.max_length, what the in-domain
        # cross-encoder trains at): ~2,000 pairs a pass, minutes on two cores.
        "rerank": lambda: bench_rerank(
            args.data,
            args.reranker,
            depth=5 if quick else 20,
            max_length=64 if quick else 256,
            batch_size=16 if quick else 32,
            max_queries=0 if quick else 100,
            repeats=repeats,
            backends=backends,
        ),
        # The seed recipe on the whole train split, as the issue's H200 yardstick.
        "gpu": lambda: bench_gpu(
            args.data,
            args.model,
            pairs=32 if quick else 0,
            batch_size=8 if quick else 128,
            max_seq_length=64 if quick else 256,
            encode_batch_size=16 if quick else 256,
            repeats=repeats,
        ),
        "orchestration": lambda: bench_orchestration(noop_repeats=3),
        "index": lambda: bench_index(
            sizes,
            dim=32 if quick else 384,
            n_queries=200 if quick else 1_000,
            hnsw_m=16,
            ef_searches=[16, 32, 64] if quick else [16, 32, 64, 128],
            nprobes=[1, 4] if quick else [1, 4, 16, 64],
            seed=0,
        ),
        # The full run first runs at 1/100 of the size: each stage's floor without data.
        "scale": lambda: bench_scale(
            scale_docs, scale_queries, floor_docs=0 if quick else scale_docs // 100
        ),
    }
    for name in SECTIONS:
        if name in only:
            log.info("=== %s ===", name)
            report["sections"][name] = section(runs[name])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            # Written after every section, so a late failure keeps the earlier figures.
            args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report))
    print(f"\nwritten to {args.out}")
    return report


if __name__ == "__main__":
    main()
