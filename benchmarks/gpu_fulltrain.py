"""Full-train recipes on a lent GPU machine, through the pipeline's own stages.

A CPU here trains on a few thousand pairs; the issue's reference, the plain recipe on all
110,575 NFCorpus train pairs, needs a GPU. The lent machine has PyTorch, Transformers and
Sentence Transformers, but no network, no DVC and no Faiss, and what travels to it is capped
at 64 MiB. So the work is split in two:

1. ``bundle`` (here, with the project's environment) prepares everything the jobs need in one
   folder: every job's ``params.yaml``, composed from ``conf/`` by Hydra exactly as
   ``dvc exp run -S ...`` composes it; the dataset; the base model; the wheels the machine
   lacks (Faiss, datasets, pytrec_eval, bm25s, ...). The model travels as float16, with the
   word-embedding rows of tokens that never occur in the dataset zeroed (no input of this
   dataset can reach them, so no forward pass changes), xz-compressed: 28 MiB instead of 87.
2. ``run`` (there) restores the float32 model and runs each job's stages: the commands of
   ``dvc.yaml``, in its order, in one workspace per recipe. Without DVC there, a small run
   cache stands in for it: a stage reruns only when its params (as ``dvc.yaml`` lists them)
   or an upstream stage changed, and a stage another workspace already ran with the same
   inputs is copied from there. Results go to ``$OUT/results.tar.gz`` after every job, so a
   run cut short still returns what finished.

Usage::

    # here
    PYTHONPATH=src .venv/bin/python benchmarks/gpu_fulltrain.py bundle \\
        --data ../shared/data/nfcorpus --model <all-MiniLM-L6-v2 folder> --out .gpu
    # there (the device tool carries .gpu; see RESULTS.md for the exact call)
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_fulltrain.py run --bundle .gpu --out $OUT
    # here again: the table
    PYTHONPATH=src .venv/bin/python benchmarks/gpu_fulltrain.py report results.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from irtune.pipeline import declared_params, interpolate, load_stages, lookup, stage_outputs

log = logging.getLogger("gpu_fulltrain")

REPO = Path(__file__).resolve().parents[1]
#: Where ``run`` unpacks the dataset and model on the lent machine; the composed params name
#: these paths, so they are fixed.
MACHINE_ROOT = Path("/tmp/irtune-gpu")
MODEL_FILE = "model.safetensors"
#: The wheels the lent machine's image lacks (it has torch, transformers, accelerate, numpy,
#: scipy, pandas, pyarrow, pyyaml): the versions requirements.lock pins.
WHEELS = [
    "faiss-cpu==1.15.1",
    "datasets==5.2.0",
    "dill==0.4.1",
    "multiprocess==0.70.19",
    "pytrec-eval-terrier==0.5.11",
    "sentence-transformers==6.2.0",
    "omegaconf==2.3.1",
    "bm25s==0.3.16",
    "PyStemmer==3.1.0",
]
PURE_WHEELS = ["antlr4-python3-runtime==4.9.3"]  # an sdist only: built into a wheel here

# Hydra overrides shared by every job: the local copies, no cross-encoder (none offline), no
# MLflow store on the lent machine (the records come back in the results instead).
COMMON = [
    f"dataset.source={MACHINE_ROOT / 'nfcorpus'}",
    f"model.base={MACHINE_ROOT / 'model'}",
    "rerank.top_k=0",
    "tracking.enabled=false",
]
PRF = ["retrieve.prf_ks=[0,1,2,3,5]", "retrieve.prf_betas=[0.25,0.5,1.0]"]
NO_PRF = ["retrieve.prf_ks=[0]"]
HYBRID = ["retrieve.mode=hybrid"]
# The plain recipe of the issue: MNRL, batch 128, 1 epoch over every train pair, lr 2e-5.
PLAIN = ["loss=mnrl", "train.batch_size=128", "train.epochs=1", "train.lr=2e-5"]
# cpu_best's loss over every train pair at the plain recipe's batch size and lr.
GIST = ["loss=gist", "train.batch_size=128", "train.epochs=1", "train.lr=2e-5"]
# cpu_best itself, its 4,000-pair cap lifted (2 positives per query: about 5,200 pairs), the
# dev curve on.
CPU_BEST = ["experiment=cpu_best", "prepare.max_pairs=0", "train.eval_dev=true"]


@dataclass(frozen=True)
class Job:
    """One pipeline run: a recipe's workspace and the Hydra overrides of its params."""

    name: str
    workspace: str
    overrides: tuple[str, ...]


#: In priority order: a run cut short loses the last ones. Variants of a recipe share its
#: workspace, so only retrieve and evaluate rerun for them.
JOBS = [
    Job("plain", "plain", (*PLAIN,)),
    Job("gist_prf", "gist", (*GIST, *PRF)),
    Job("cpu_best_full", "cpu_best", (*CPU_BEST,)),
    Job("zero_shot_prf", "zero_shot", ("train.epochs=0", *PRF)),
    Job("plain_prf", "plain", (*PLAIN, *PRF)),
    Job("gist", "gist", (*GIST, *NO_PRF)),
    Job("cpu_best_full_noprf", "cpu_best", (*CPU_BEST, *NO_PRF)),
    Job("gist_prf_hybrid", "gist", (*GIST, *PRF, *HYBRID)),
    Job("cpu_best_full_hybrid", "cpu_best", (*CPU_BEST, *HYBRID)),
    Job("zero_shot_prf_hybrid", "zero_shot", ("train.epochs=0", *PRF, *HYBRID)),
]
#: What each job returns, relative to its workspace.
RESULT_FILES = [
    "params.yaml",
    "metrics/prepare.json",
    "metrics/train.json",
    "metrics/retrieve.json",
    "metrics/eval.json",
    "metrics/significance.json",
    "data/eval/per_query.json",
    "data/runs/retrieve.trec",
]


# ---------------------------------------------------------------------------------------
# bundle: here
# ---------------------------------------------------------------------------------------


def pack_model(model_dir: Path, data_dir: Path, out_dir: Path) -> None:
    """Copy ``model_dir`` to ``out_dir`` with its weights as xz-compressed float16, and the
    word-embedding rows of tokens that no text of the dataset produces set to zero."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from irtune.beir import doc_text, read_beir

    # 1. Every token id any text of the dataset can produce: documents as encode and prepare
    #    see them, and the queries of every split. Truncation only drops ids.
    dataset = read_beir(data_dir, ["train", "dev", "test"])
    texts = [doc_text(doc) for doc in dataset.corpus.values()] + list(dataset.queries.values())
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    used = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), 512):
        for ids in tokenizer(texts[start : start + 512])["input_ids"]:
            used.update(ids)

    # 2. float16 weights (integer buffers stay as they are), unused rows zeroed.
    state = load_file(str(model_dir / MODEL_FILE))
    packed = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    (name,) = [k for k in packed if k.endswith("word_embeddings.weight")]
    unused = torch.ones(packed[name].shape[0], dtype=torch.bool)
    unused[sorted(used)] = False
    packed[name][unused] = 0
    log.info("%d of %d vocabulary rows occur in the dataset", len(used), len(unused))

    # 3. Everything else of the folder as it is.
    shutil.copytree(model_dir, out_dir, ignore=shutil.ignore_patterns(MODEL_FILE, "__pycache__"))
    with tempfile.TemporaryDirectory() as tmp:
        save_file(packed, f"{tmp}/{MODEL_FILE}")
        with lzma.open(out_dir / f"{MODEL_FILE}.xz", "wb", preset=9) as fh:
            fh.write(Path(tmp, MODEL_FILE).read_bytes())


def fetch_wheels(dest: Path) -> None:
    """Download the wheels the lent machine lacks, for its Python 3.12 on x86-64."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [
        "manylinux_2_28_x86_64",
        "manylinux_2_27_x86_64",
        "manylinux_2_24_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
        "manylinux_2_5_x86_64",
        "manylinux1_x86_64",
    ]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
        + ["--implementation", "cp", "-d", str(dest)]
        + [f"--platform={p}" for p in platforms]
        + WHEELS,
        check=True,
    )
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dest), *PURE_WHEELS], check=True)


#: ``bundle --smoke``: tiny sizes, to try the whole round trip on a CPU in minutes.
SMOKE = [
    "prepare.max_pairs=64",
    "train.max_seq_length=32",
    "encode.max_seq_length=32",
    "train.batch_size=16",
]


def bundle(data: Path, model: Path, out: Path, smoke: bool = False) -> None:
    """Write everything ``run`` needs into ``out``."""
    from irtune.compose import compose

    if out.exists():
        shutil.rmtree(out)
    (out / "params").mkdir(parents=True)
    # 1. Each job's params.yaml, composed and validated as `dvc exp run -S ...` would.
    for job in JOBS:
        compose(
            [*COMMON, *job.overrides, *(SMOKE if smoke else [])],
            root=REPO,
            output=str((out / "params" / f"{job.name}.yaml").resolve()),
        )
    (out / "jobs.json").write_text(
        json.dumps([job.__dict__ for job in JOBS], indent=2), encoding="utf-8"
    )
    # 2. The dataset's files as they are (gzip), the model, the wheels.
    shutil.copytree(data, out / "nfcorpus")
    pack_model(model, data, out / "model")
    fetch_wheels(out / "wheels")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("Bundle %s: %.1f MiB", out, size / 2**20)


# ---------------------------------------------------------------------------------------
# run: on the lent machine
# ---------------------------------------------------------------------------------------


def unpack_model(packed: Path, dest: Path) -> None:
    """Restore a float32 SentenceTransformer folder from :func:`pack_model`'s output."""
    from safetensors.torch import load, save_file

    shutil.copytree(packed, dest, ignore=shutil.ignore_patterns(f"{MODEL_FILE}.xz"))
    with lzma.open(packed / f"{MODEL_FILE}.xz", "rb") as fh:
        state = load(fh.read())
    save_file(
        {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()},
        str(dest / MODEL_FILE),
    )


@dataclass
class Stage:
    """A stage of ``dvc.yaml`` with its ``${...}`` references resolved."""

    name: str
    cmd: str
    params: list[str] | None  # None: the whole params file
    deps: list[str]
    outs: list[str]

    def params_slice(self, params: dict[str, Any]) -> Any:
        if self.params is None:
            return params
        return {key: lookup(params, key) for key in self.params}


def read_stages(dvc_yaml: Path, params: dict[str, Any]) -> list[Stage]:
    """The stages of ``dvc_yaml`` in file order (which is topological in irtune's)."""
    stages = []
    for name, spec in load_stages(dvc_yaml).items():
        deps = [interpolate(d, params) for d in spec.get("deps", [])]
        outs = stage_outputs(spec)
        stages.append(
            Stage(
                name,
                interpolate(spec["cmd"], params),
                declared_params(spec),
                deps,
                [interpolate(o, params) for o in outs],
            )
        )
    return stages


class Runner:
    """Runs jobs' stages as ``dvc repro`` would, with a run cache across workspaces."""

    def __init__(self, root: Path, log_file: Path, source: Path = REPO):
        self.root = root
        self.log_file = log_file
        self.source = source  # the checkout whose dvc.yaml, stages/ and src/ the jobs run
        self.done: dict[str, Path] = {}  # stage key -> workspace that holds its outputs

    def workspace(self, name: str) -> Path:
        ws = self.root / name
        if not ws.exists():
            ws.mkdir(parents=True)
            for item in ("dvc.yaml", "stages", "src"):
                src = self.source / item
                if src.exists():
                    (shutil.copytree if src.is_dir() else shutil.copy2)(src, ws / item)
        return ws

    def run_job(self, job: Job, params_file: Path) -> dict[str, float]:
        """Run ``job`` in its workspace; returns each stage's wall seconds (0: up to date or
        copied from another workspace)."""
        ws = self.workspace(job.workspace)
        shutil.copy2(params_file, ws / "params.yaml")
        params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
        stages = read_stages(ws / "dvc.yaml", params)
        producer = {out: stage.name for stage in stages for out in stage.outs}
        keys: dict[str, str] = {}
        state_file = ws / ".stage_keys.json"
        last = json.loads(state_file.read_text()) if state_file.exists() else {}
        walls: dict[str, float] = {}
        for stage in stages:
            upstream = sorted({producer[d] for d in stage.deps if d in producer})
            blob = json.dumps([stage.name, stage.params_slice(params), [keys[u] for u in upstream]])
            keys[stage.name] = key = hashlib.sha256(blob.encode()).hexdigest()
            if last.get(stage.name) == key:
                walls[stage.name] = 0.0
                continue
            if key in self.done and self.done[key] != ws:
                for out in stage.outs:
                    src, dst = self.done[key] / out, ws / out
                    if dst.is_dir():
                        shutil.rmtree(dst)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
                log.info("%s/%s: copied from %s", job.name, stage.name, self.done[key].name)
                walls[stage.name] = 0.0
            else:
                walls[stage.name] = self._execute(job, stage, ws)
            self.done[key] = ws
            last[stage.name] = key
            state_file.write_text(json.dumps(last))
        return walls

    def _execute(self, job: Job, stage: Stage, ws: Path) -> float:
        # dvc.yaml runs `PYTHONPATH=src python ...`: here the wheels on PYTHONPATH must stay
        # importable too, and `python` is this interpreter.
        cmd = stage.cmd.removeprefix("PYTHONPATH=src ").replace("python ", f"{sys.executable} ", 1)
        log.info("%s/%s: %s", job.name, stage.name, cmd)
        start = time.perf_counter()
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")])
        }
        with self.log_file.open("a", encoding="utf-8") as fh:
            fh.write(f"\n### {job.name}/{stage.name}: {cmd}\n")
            fh.flush()
            proc = subprocess.run(cmd, shell=True, cwd=ws, env=env, stdout=fh, stderr=fh)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(f"{job.name}/{stage.name} failed (rc {proc.returncode}); see log")
        log.info("%s/%s: %.1fs", job.name, stage.name, seconds)
        return seconds


def machine_info() -> dict[str, Any]:
    """The accelerator and library versions, for the report."""
    import sentence_transformers
    import torch
    import transformers

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run(bundle_dir: Path, out: Path, budget_s: float, only: list[str] | None) -> None:
    """Run the bundle's jobs in order until done or ``budget_s`` is spent."""
    start = time.perf_counter()
    # 1. Fail fast: every import a stage needs, before any minute is spent.
    import bm25s  # noqa: F401
    import datasets  # noqa: F401
    import faiss  # noqa: F401
    import omegaconf  # noqa: F401
    import pytrec_eval  # noqa: F401
    import Stemmer  # noqa: F401

    info = machine_info()
    log.info("Machine: %s", info)

    # 2. The dataset and float32 model where the params expect them.
    if MACHINE_ROOT.exists():
        shutil.rmtree(MACHINE_ROOT)
    MACHINE_ROOT.mkdir(parents=True)
    shutil.copytree(bundle_dir / "nfcorpus", MACHINE_ROOT / "nfcorpus")
    unpack_model(bundle_dir / "model", MACHINE_ROOT / "model")

    # 3. The jobs, results packed after each one.
    runner = Runner(MACHINE_ROOT / "work", out / "log.txt")
    jobs = [Job(j["name"], j["workspace"], tuple(j["overrides"])) for j in _jobs(bundle_dir)]
    results: dict[str, Any] = {"machine": info, "jobs": {}}
    files: dict[str, bytes] = {}  # "job/rel" -> content, for every finished job
    for job in jobs:
        if only and job.name not in only:
            continue
        if time.perf_counter() - start > budget_s:
            log.warning("Budget of %.0fs spent: skipping %s", budget_s, job.name)
            results["jobs"][job.name] = {"skipped": "budget"}
            continue
        try:
            walls = runner.run_job(job, bundle_dir / "params" / f"{job.name}.yaml")
        except RuntimeError as exc:
            log.error("%s", exc)
            results["jobs"][job.name] = {"error": str(exc)}
            continue
        ws = runner.root / job.workspace
        results["jobs"][job.name] = {"overrides": list(job.overrides), "stage_seconds": walls}
        files |= {f"{job.name}/{rel}": (ws / rel).read_bytes() for rel in RESULT_FILES
                  if (ws / rel).exists()}  # fmt: skip
        _pack(results, files, out / "results.tar.gz")
    log.info("All jobs done in %.0fs", time.perf_counter() - start)


def _jobs(bundle_dir: Path) -> list[dict[str, Any]]:
    return json.loads((bundle_dir / "jobs.json").read_text(encoding="utf-8"))


def _pack(results: dict[str, Any], files: dict[str, bytes], dest: Path) -> None:
    """Write ``results.json`` and every job's files (``job/rel``) to the archive ``dest``,
    atomically: a run cut short leaves the last whole archive."""
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        blobs = {"results.json": json.dumps(results, indent=2).encode()} | files
        for arcname, data in blobs.items():
            member = tarfile.TarInfo(arcname)
            member.size = len(data)
            tar.addfile(member, fileobj=io.BytesIO(data))
    tmp.replace(dest)


# ---------------------------------------------------------------------------------------
# report: here again
# ---------------------------------------------------------------------------------------


def report(archives: list[Path], baseline: str, out: Path | None) -> str:
    """A markdown table of every finished job of ``archives`` (later ones add jobs), with
    paired tests against the job ``baseline``; ``out`` gets the jobs' files, run files aside."""
    from irtune.evaluate import compare

    files: dict[str, bytes] = {}
    results: dict[str, Any] = {"machine": set(), "jobs": {}}
    for archive in archives:
        with tarfile.open(archive) as tar:
            part = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        meta = json.loads(part.pop("results.json"))
        results["machine"].add(json.dumps(meta["machine"], sort_keys=True))
        done = {name: job for name, job in meta["jobs"].items() if "stage_seconds" in job}
        results["jobs"] |= done
        files |= {k: v for k, v in part.items() if k.split("/")[0] in done}
    if out:
        for key, data in files.items():
            if not key.endswith(".trec"):  # the runs are large; the per-query metrics stay
                (out / key).parent.mkdir(parents=True, exist_ok=True)
                (out / key).write_bytes(data)

    def load(name: str, rel: str) -> Any:
        key = f"{name}/{rel}"
        return json.loads(files[key]) if key in files else None

    base_pq = load(baseline, "data/eval/per_query.json")
    lines = [
        *(f"Machine: {m}" for m in sorted(results["machine"])),
        "",
        "| job | train rows | steps | dev NDCG@10 (dense / feedback) | chosen on dev | NDCG@10 "
        f"| R@100 | MRR@10 | p vs zero-shot | p vs {baseline} | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, job in results["jobs"].items():
        ev = load(name, "metrics/eval.json")["retrieve"]
        sig = load(name, "metrics/significance.json")["retrieve"]["ndcg_at_10"]
        train = load(name, "metrics/train.json") or {}
        summary = train.get("summary", train)
        retr = load(name, "metrics/retrieve.json") or {}
        chosen = ", ".join(
            f"{k}={retr[k]}" for k in ("prf_k", "prf_beta", "dense_weight") if k in retr
        )
        dev = f"{summary['dev_ndcg_at_10']:.4f}" if "dev_ndcg_at_10" in summary else ""
        grid = retr.get("dev_ndcg_at_10_prf_grid", {})
        if retr.get("prf_k"):
            chosen_key = f"k={retr['prf_k']},beta={retr['prf_beta']:g}"
            dev = f"{dev} / {grid[chosen_key]:.4f}"
        vs = ""
        if base_pq and name != baseline:
            cmp = compare(
                load(name, "data/eval/per_query.json")["retrieve"], base_pq["retrieve"], 0.05
            )
            vs = f"{cmp['ndcg_at_10']['p_value']:.3g} ({cmp['ndcg_at_10']['verdict']})"
        lines.append(
            f"| {name} | {summary.get('train_rows', '')} | {summary.get('steps', '')} | {dev} "
            f"| {chosen} | {ev['ndcg_at_10']:.4f} | {ev['recall_at_100']:.4f} "
            f"| {ev['mrr_at_10']:.4f} | {sig['p_value']:.3g} ({sig['verdict']}) | {vs} "
            f"| {job['stage_seconds'].get('train', 0):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="here: compose params, pack data, model and wheels")
    b.add_argument("--data", type=Path, required=True)
    b.add_argument("--model", type=Path, required=True)
    b.add_argument("--out", type=Path, default=REPO / ".gpu")
    b.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU try")
    r = sub.add_parser("run", help="on the GPU machine: run the jobs")
    r.add_argument("--bundle", type=Path, default=REPO / ".gpu")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--budget-s", type=float, default=float("inf"), help="start no job after")
    r.add_argument("--only", default="", help="comma-separated job names")
    p = sub.add_parser("report", help="here: a table of a run's results")
    p.add_argument("archives", type=Path, nargs="+", help="results.tar.gz of one or more runs")
    p.add_argument("--baseline", default="plain", help="job the others are tested against")
    p.add_argument("--extract", type=Path, default=None, help="also write the jobs' files here")
    args = parser.parse_args(argv)
    if args.cmd == "bundle":
        bundle(args.data, args.model, args.out, args.smoke)
    elif args.cmd == "run":
        args.out.mkdir(parents=True, exist_ok=True)
        run(args.bundle, args.out, args.budget_s, [j for j in args.only.split(",") if j])
    else:
        print(report(args.archives, args.baseline, args.extract))


if __name__ == "__main__":
    main()
