"""MLflow tracking: an unreachable store never fails the pipeline, ``make sync`` logs the
waiting run exactly once, and nothing secret or remote-code-enabling slips in.

The evaluate stage runs for real (dvc.yaml's command line, in-process) on hand-made runs of
the tiny dataset, so no model is trained here; the stores are real SQLite MLflow stores, and
the team's server (``team_server``, conftest.py) for the secrets logged to a server.
"""

from __future__ import annotations

import ast
import getpass
import inspect
import json
import logging
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy
import pytest
import yaml
from harness import REPO, StageWorkspace, default_params
from team_server import TeamServer

from irtune import sync as sync_cli
from irtune import tracking
from irtune.beir import find_file, read_corpus, read_qrels
from irtune.config import Config
from irtune.models import load_bi_encoder, load_cross_encoder, load_encoder
from irtune.runs import write_trec_run

#: A closed port: nothing listens there.
UNREACHABLE = "http://127.0.0.1:9"
EXPERIMENT = "irtune-tracking-test"
SECRETS = {
    "HF_TOKEN": "secret-hf-123",
    "MLFLOW_TRACKING_TOKEN": "secret-mlflow-456",
    "MLFLOW_TRACKING_PASSWORD": "secret-pw-789",
    "AWS_SECRET_ACCESS_KEY": "secret-aws-000",
}
#: Names of environment variables whose values are credentials.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_KEY", re.I)


@pytest.fixture
def repo(
    tmp_path: Path, tiny_beir: Path, tiny_bi_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict[str, Any]]:
    """A workspace holding everything the evaluate stage reads, as the cwd and repo root.

    The three runs are seeded random rankings of the corpus for the test queries,
    metrics/train.json is a small history with a loss curve and one dev point, and the
    "trained" model data/model is the tiny bi-encoder.
    """
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_ROOT", str(root))
    for name in ("MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    # log_record sets these if unset; recorded here so they are unset again afterwards.
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)

    params = default_params(
        dataset={"name": "tiny", "source": str(tiny_beir)},
        tracking={"uri": UNREACHABLE, "experiment": EXPERIMENT},
    )
    data = Path(shutil.copytree(tiny_beir, root / "data" / "raw" / "tiny"))
    shutil.copytree(tiny_bi_encoder, root / "data" / "model")
    qrels = read_qrels(find_file(data / "qrels", "test.tsv"))
    doc_ids = list(read_corpus(find_file(data, "corpus.jsonl")))
    rng = random.Random(0)
    for name in ("retrieve", "rerank", "baseline"):
        run = {}
        for q, judged in qrels.items():
            # The judged docs at random ranks among 16 random others.
            ranking = rng.sample([*judged, *rng.sample(doc_ids, 16)], 20)
            run[q] = {d: 1.0 / (rank + 1) for rank, d in enumerate(ranking)}
        write_trec_run(root / "data" / "runs" / f"{name}.trec", run, tag=name)
    history = {
        "summary": {"epochs": 1, "steps": 4, "train_rows": 72, "train_loss": 1.25},
        "loss_curve": [
            {"step": s, "epoch": s / 4, "loss": 2.0 - s / 4, "learning_rate": 1e-5 * s}
            for s in (1, 2, 3, 4)
        ],
        "dev_curve": [{"step": 4, "epoch": 1.0, "dev_ndcg_at_10": 0.5}],
    }
    (root / "metrics").mkdir()
    (root / "metrics" / "train.json").write_text(json.dumps(history), encoding="utf-8")
    # What a hybrid retrieve stage with feedback writes: its dev choices and the dev scores.
    choices = {
        "mode": "hybrid",
        "top_k": 20,
        "prf_first_pass": "hybrid",
        "prf_first_pass_dense_weight": 0.5,
        "prf_k": 2,
        "prf_beta": 0.5,
        "dev_ndcg_at_10_prf_grid": {"k=0": 0.41, "k=2,beta=0.5": 0.43},
        "fusion": "wsum",
        "dense_weight": 0.6,
        "dev_ndcg_at_10": {"dense": 0.38, "bm25": 0.35, "fused": 0.44},
        "dev_ndcg_at_10_grid": {"0.5": 0.43, "0.6": 0.44},
    }
    (root / "metrics" / "retrieve.json").write_text(json.dumps(choices), encoding="utf-8")
    # What a rerank stage that chose on dev writes.
    rerank = {
        "top_k": 20,
        "fusion": "wsum",
        "depth": 10,
        "ce_weight": 0.3,
        "dev_ndcg_at_10": {"first_stage": 0.44, "reranked": 0.40, "chosen": 0.46},
        "dev_ndcg_at_10_grid": {"depth=10,ce_weight=0.3": 0.46},
    }
    (root / "metrics" / "rerank.json").write_text(json.dumps(rerank), encoding="utf-8")
    # What download writes for a dataset whose dev split was carved out of train.
    counts = {
        "docs": len(doc_ids),
        "queries": 40,
        "test_queries": len(qrels),
        "dev_carve": {
            "from_split": "train",
            "fraction": 0.2,
            "seed": 7,
            "queries": 3,
            "qrels": 5,
            "query_ids": ["Q1", "Q2", "Q3"],
        },
    }
    (root / "metrics" / "download.json").write_text(json.dumps(counts), encoding="utf-8")
    return root, params


def _evaluate(root: Path, params: dict[str, Any]) -> None:
    ws = StageWorkspace(root, params)
    ws.write_params()
    ws.run("evaluate")


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _assert_run_matches(run, record: dict[str, Any]) -> None:
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.RUN_KEY_TAG] == record["run_key"]
    assert run.data.params == record["params"], "the logged params differ from the record"
    for name, value in record["metrics"].items():
        assert run.data.metrics[name] == pytest.approx(value), name


# --- (a) an unreachable store ------------------------------------------------------------


def test_unreachable_store_spools_and_sync_logs_it_once(
    repo: tuple[Path, dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the store down, evaluate still completes (metrics written), warns naming the
    store, and leaves one record in .irtune/pending; `python -m irtune.sync --uri` then logs
    it as exactly one run with the record's params and metrics and removes it; a second sync
    logs nothing more."""
    root, params = repo
    caplog.set_level(logging.WARNING)
    _evaluate(root, params)  # returns normally: a failed stage would raise SystemExit

    eval_json = json.loads((root / "metrics" / "eval.json").read_text(encoding="utf-8"))
    assert set(eval_json) == {"retrieve", "rerank"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    about_store = [w for w in warnings if UNREACHABLE in w and "unreachable" in w]
    assert len(about_store) == 1, f"expected one warning naming the store, got {warnings}"

    assert tracking.pending_dir() == root / ".irtune" / "pending"
    pending = sorted(tracking.pending_dir().glob("*.json"))
    assert len(pending) == 1, pending
    record = json.loads((root / "data" / "eval" / "mlflow_record.json").read_text("utf-8"))
    waiting = json.loads(pending[0].read_text(encoding="utf-8"))
    assert pending[0].name == f"{record['run_key']}.json"
    # The record waits with copies of its files: a queued experiment's vanish with its copy.
    files = tracking.pending_dir() / record["run_key"]
    assert waiting == record | {
        "tracking_uri": UNREACHABLE,
        "artifacts": [str(files / Path(a).name) for a in record["artifacts"]],
        "model": record["model"] | {"path": str(files / "model")},
    }
    for original, copy in zip(record["artifacts"], waiting["artifacts"], strict=True):
        assert Path(copy).read_bytes() == (root / original).read_bytes(), copy
    shutil.rmtree(root / "data" / "model")  # the next experiment's checkout, say
    # What retrieve chose on dev travels with the run (the grids stay in the file).
    chosen = {
        k: v
        for k, v in record["metrics"].items()
        if k.startswith(("chosen.", "dev_", "rerank_dev_"))
    }
    assert chosen == {
        "chosen.prf_first_pass_dense_weight": 0.5,
        "chosen.prf_k": 2,
        "chosen.prf_beta": 0.5,
        "chosen.dense_weight": 0.6,
        "dev_ndcg_at_10.dense": 0.38,
        "dev_ndcg_at_10.bm25": 0.35,
        "dev_ndcg_at_10.fused": 0.44,
        "chosen.rerank_depth": 10,
        "chosen.rerank_ce_weight": 0.3,
        "rerank_dev_ndcg_at_10.first_stage": 0.44,
        "rerank_dev_ndcg_at_10.reranked": 0.40,
        "rerank_dev_ndcg_at_10.chosen": 0.46,
    }
    # Where the dev split came from: the carve-out, in a tag; the ids in the artifact.
    assert record["tags"]["dev_split"] == "carved from train: 3 queries (fraction 0.2, seed 7)"
    assert record["metrics"]["data.test_queries"] == len(read_qrels(find_file(
        root / "data" / "raw" / "tiny" / "qrels", "test.tsv")))  # fmt: skip
    assert "metrics/download.json" in record["artifacts"]

    store = f"sqlite:///{tmp_path / 'store.db'}"
    env = os.environ | {"DVC_ROOT": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "irtune.sync", "--uri", store],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Sent 1 run(s)" in proc.stderr, proc.stderr
    assert list(tracking.pending_dir().iterdir()) == [], "the sent record still waits"
    runs = _runs(store)
    assert len(runs) == 1, f"expected one run, found {len(runs)}"
    _assert_run_matches(runs[0], record)
    # Logged late, the run keeps the pipeline's own times, and the model (from the copy).
    assert (runs[0].info.start_time, runs[0].info.end_time) == (
        record["start_time"],
        record["end_time"],
    )
    assert runs[0].data.tags[tracking.MODEL_URI_TAG].startswith("models:/")

    with pytest.raises(SystemExit) as exit_info:
        sync_cli.main(["--uri", store])
    assert exit_info.value.code == 0
    assert len(_runs(store)) == 1, "a second sync logged another run"


def test_resending_a_record_never_duplicates_the_run(
    repo: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Sending the same record twice (directly, then as a copy waiting in pending) leaves
    one run: the run key is looked up before anything is logged."""
    root, params = repo
    params["tracking"]["enabled"] = False  # only the record on disk
    _evaluate(root, params)
    record = json.loads((root / "data" / "eval" / "mlflow_record.json").read_text("utf-8"))
    store = f"sqlite:///{tmp_path / 'store.db'}"

    first = tracking._log(record, store)
    again = tracking._log(record, store)
    assert again == first
    pending = tracking.pending_dir()
    pending.mkdir(parents=True)
    (pending / "copy.json").write_text(json.dumps(record | {"tracking_uri": store}), "utf-8")
    assert tracking.sync() == (1, 0)  # "sent": it was found in the store, not logged again
    runs = _runs(store)
    assert [r.info.run_id for r in runs] == [first], "the record was logged more than once"
    _assert_run_matches(runs[0], record)


# --- (b) MLflow's own conventions, the model and the registry ------------------------------


def _git_repo(root: Path, origin: str) -> str:
    """Make ``root`` a git repository with one commit and ``origin``; returns HEAD."""
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    subprocess.run([*git, "remote", "add", "origin", origin], check=True)
    return subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_run_fills_mlflows_own_columns(repo: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """The runs page's own columns fill: Source and Version from MLflow's system tags (the
    pipeline's dvc.yaml, its git commit), User, Duration spanning the pipeline (outside DVC,
    as here, the process that ran the stage) rather than the logging, and Dataset: the
    evaluated BEIR folder as a run input, its split as context and its counts as profile."""
    import psutil

    root, params = repo
    head = _git_repo(root, "https://git.example.com/team/irtune.git")
    store = f"sqlite:///{tmp_path / 'store.db'}"
    params["tracking"]["uri"] = store
    before = time.time()
    _evaluate(root, params)
    after = time.time()
    (run,) = _runs(store)

    tags = run.data.tags
    assert tags["mlflow.source.name"] == str(root.resolve() / "dvc.yaml")
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == head == tags["git_commit"]
    assert tags["mlflow.source.git.repoURL"] == "https://git.example.com/team/irtune.git"
    assert tags["mlflow.user"] == getpass.getuser()
    started = int(psutil.Process().create_time() * 1000)  # this process ran the stage
    assert run.info.start_time == started < before * 1000
    assert before * 1000 <= run.info.end_time <= after * 1000

    (given,) = run.inputs.dataset_inputs
    assert given.dataset.name == "tiny"
    assert given.dataset.source_type == "local"
    assert json.loads(given.dataset.source) == {"uri": params["dataset"]["source"]}
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "test"}
    profile = json.loads(given.dataset.profile)
    counts = json.loads((root / "metrics" / "download.json").read_text(encoding="utf-8"))
    assert profile["test_queries"] == counts["test_queries"], profile
    # The digest is the data's: a changed judgement changes it, the same bytes do not.
    cfg = Config()
    cfg.dataset.source = params["dataset"]["source"]
    data = root / "data" / "raw" / "tiny"
    assert tracking.dataset_input(cfg, data, counts)["digest"] == given.dataset.digest
    qrels = find_file(data / "qrels", "test.tsv")
    qrels.write_bytes(qrels.read_bytes().replace(b"\t1\n", b"\t2\n", 1))
    assert tracking.dataset_input(cfg, data, counts)["digest"] != given.dataset.digest


def test_is_dvc_reads_the_ways_dvc_is_started() -> None:
    assert tracking._is_dvc(["/venv/bin/python", "/venv/bin/dvc", "exp", "run"])
    assert tracking._is_dvc(["dvc", "repro"])
    assert tracking._is_dvc(["python3", "-m", "dvc", "exp", "exec-run"])
    assert not tracking._is_dvc(["sh", "-c", "python stages/evaluate.py --data /tmp/dvc/x"])
    assert not tracking._is_dvc(["python", "/tmp/dvc-repo/stages/train.py"])


def test_the_trained_model_is_logged_registered_and_loads_back(
    repo: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The run carries data/model with MLflow's sentence_transformers flavor; `make register
    EXP=...` makes it a version of irtune-<dataset> tagged with the run's metrics and
    origin, which loads back through MLflow and embeds as data/model does. `--best-of` a
    sweep picks its member with the best ndcg_at_10; an unknown experiment is one error."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from irtune import register

    root, params = repo
    store = f"sqlite:///{tmp_path / 'store.db'}"
    params["tracking"]["uri"] = store
    params["sweep"] |= {"name": "losses", "id": "s1"}
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    _evaluate(root, params)
    # A second member of the sweep, whose final run is the (worse or better) baseline run.
    runs_dir = root / "data" / "runs"
    shutil.copy(runs_dir / "baseline.trec", runs_dir / "rerank.trec")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-b")
    _evaluate(root, params)
    by_name = {r.info.run_name: r for r in _runs(store)}
    assert set(by_name) == {"exp-a", "exp-b"}
    for run in by_name.values():
        assert run.data.tags[tracking.MODEL_URI_TAG].startswith("models:/"), run.data.tags

    args = ["--params", str(root / "params.yaml")]
    register.main(["--exp", "exp-a", *args])
    client = MlflowClient(tracking_uri=store)
    version = client.get_model_version("irtune-tiny", "1")
    run = by_name["exp-a"]
    assert version.run_id == run.info.run_id
    assert version.tags["dvc_exp_name"] == "exp-a"
    assert version.tags["sweep"] == "losses"
    assert version.tags["metric.ndcg_at_10"] == f"{run.data.metrics['ndcg_at_10']:.4f}"

    with tracking.fluent_store(store):
        loaded = mlflow.sentence_transformers.load_model("models:/irtune-tiny/1")
    texts = ["vitamin d and bone density", "a query about statins"]
    expected = load_bi_encoder(str(root / "data" / "model")).encode(texts)
    assert numpy.array_equal(loaded.encode(texts), expected)

    register.main(["--best-of", "losses", "--name", "best", *args])
    best = max(by_name.values(), key=lambda r: r.data.metrics["ndcg_at_10"])
    assert client.get_model_version("best", "1").run_id == best.info.run_id

    caplog.set_level(logging.ERROR)
    with pytest.raises(SystemExit) as exit_info:
        register.main(["--exp", "nope", *args])
    assert exit_info.value.code == 1
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "DVC experiment 'nope'" in error, error


# --- (c) security ------------------------------------------------------------------------


def test_no_secret_reaches_the_run_or_the_record(
    repo: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With credentials in the environment, none of their values appears in the logged
    run's params, tags or metric names, nor in data/eval/mlflow_record.json."""
    root, params = repo
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    params["tracking"]["uri"] = store
    _evaluate(root, params)

    secrets = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6}
    assert set(SECRETS.values()) <= secrets
    runs = _runs(store)
    assert len(runs) == 1
    data = runs[0].data
    logged = {
        "params": json.dumps(data.params),
        "tags": json.dumps(data.tags),
        "metric names": json.dumps(sorted(data.metrics)),
        "mlflow_record.json": (root / "data" / "eval" / "mlflow_record.json").read_text("utf-8"),
    }
    leaks = [(where, s) for where, text in logged.items() for s in secrets if s in text]
    assert not leaks, f"secret values leaked: {leaks}"


def test_make_ui_binds_to_localhost() -> None:
    """`make -n ui` (what `make ui` would run) starts the MLflow UI on 127.0.0.1 only."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        ["make", "-n", "ui"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    commands = [shlex.split(line) for line in out.splitlines() if " ui " in f" {line} "]
    mlflow_ui = [c for c in commands if c and c[0].endswith("mlflow") and c[1] == "ui"]
    assert len(mlflow_ui) == 1, f"no single `mlflow ui` command in:\n{out}"
    argv = mlflow_ui[0]
    hosts = [argv[i + 1] for i, a in enumerate(argv) if a in ("--host", "-h")]
    hosts += [a.split("=", 1)[1] for a in argv if a.startswith("--host=")]
    assert hosts == ["127.0.0.1"], f"the UI must bind to 127.0.0.1 only: {argv}"


# --- trust_remote_code -------------------------------------------------------------------


def test_trust_remote_code_is_off_by_default() -> None:
    """The schema, conf/config.yaml and the committed params.yaml all keep trust_remote_code
    off for the bi-encoder and the cross-encoder."""
    assert Config().model.trust_remote_code is False
    assert Config().rerank.trust_remote_code is False
    for path in (REPO / "conf" / "config.yaml", REPO / "params.yaml"):
        if not path.exists():
            continue
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert raw["model"]["trust_remote_code"] is False, path
        assert raw["rerank"]["trust_remote_code"] is False, path


def test_loaders_pass_the_flag_to_the_models(
    tiny_bi_encoder: Path, tiny_cross_encoder: Path
) -> None:
    """The loaders give the models trust_remote_code as asked, False when not asked: the
    flag Sentence Transformers keeps on the model (and consults for remote code)."""
    assert load_bi_encoder(str(tiny_bi_encoder)).trust_remote_code is False
    assert load_bi_encoder(str(tiny_bi_encoder), trust_remote_code=True).trust_remote_code is True
    assert load_cross_encoder(str(tiny_cross_encoder), 128).trust_remote_code is False
    on = load_cross_encoder(str(tiny_cross_encoder), 128, trust_remote_code=True)
    assert on.trust_remote_code is True


#: Every call that builds a model, and the trust_remote_code arguments it may be given: the
#: config key of its kind of model, or (inside a loader) the loader's own argument.
ALLOWED_FLAGS = {
    "load_bi_encoder": {"cfg.model.trust_remote_code"},
    "load_encoder": {"cfg.model.trust_remote_code"},
    "SentenceTransformer": {"trust_remote_code"},
    "load_cross_encoder": {"cfg.rerank.trust_remote_code"},
    # The in-domain cross-encoder starts from model.base (src/irtune/reranker.py).
    "CrossEncoder": {"trust_remote_code", "cfg.model.trust_remote_code"},
}


#: Loaders that wrap another loader pass on their own argument (which defaults to False).
WRAPPERS = {
    ("src/irtune/models.py", "load_bi_encoder", "trust_remote_code"),
    # Logging a run's model: the flag travels in the record, from cfg.model.
    ("src/irtune/tracking.py", "load_bi_encoder", "trust_remote_code"),
}


def _model_loads() -> list[tuple[str, int, str, str | None]]:
    """(file, line, callee, trust_remote_code argument) of every model load in src/ and
    stages/."""
    found = []
    for path in sorted([*(REPO / "src").rglob("*.py"), *(REPO / "stages").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in ALLOWED_FLAGS:
                continue
            flag = next((k.value for k in node.keywords if k.arg == "trust_remote_code"), None)
            rel = path.relative_to(REPO).as_posix()
            found.append((rel, node.lineno, name, ast.unparse(flag) if flag else None))
    return found


def test_every_model_load_takes_the_flag_from_the_config() -> None:
    """Every model load in src/ and stages/ passes trust_remote_code explicitly: from
    cfg.model for bi-encoders, cfg.rerank for cross-encoders, and inside a loader its own
    argument, which defaults to False. No load falls back to a library default."""
    loads = _model_loads()
    assert len(loads) >= 8, f"too few model loads found, is the scan broken? {loads}"
    bad = [
        load
        for load in loads
        if load[3] not in ALLOWED_FLAGS[load[2]] and (load[0], load[2], load[3]) not in WRAPPERS
    ]
    assert not bad, f"model loads not taking trust_remote_code from the config: {bad}"
    for loader in (load_bi_encoder, load_encoder, load_cross_encoder):
        default = inspect.signature(loader).parameters["trust_remote_code"].default
        assert default is False, f"{loader.__name__} defaults trust_remote_code to {default}"


def test_no_secret_reaches_the_team_server(
    repo: tuple[Path, dict[str, Any]],
    team_server: TeamServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The evaluate stage logging to the team's server, logged in through MLflow's variables
    with credentials planted beside them: no secret value (the real password included)
    appears in the run's params, tags or metric names, in its artifacts as the server
    returns them or stores them, in the stage's log, in the server's log, or anywhere in the
    server's tracking database (pg_dump)."""
    from mlflow.tracking import MlflowClient

    from irtune.server import TRACKING_DB, pg_bindir

    root, params = repo
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", team_server.admin)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_server.password)
    params["tracking"]["uri"] = team_server.url
    caplog.set_level(logging.DEBUG)
    _evaluate(root, params)

    secrets = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6}
    assert team_server.password in secrets
    assert set(SECRETS.values()) - {SECRETS["MLFLOW_TRACKING_PASSWORD"]} <= secrets
    runs = _runs(team_server.url)
    assert len(runs) == 1, "the run did not reach the server"
    run = runs[0]
    downloaded = Path(MlflowClient(team_server.url).download_artifacts(
        run.info.run_id, "", str(root / "downloaded")))  # fmt: skip
    stored = team_server.dir / "artifacts"
    assert any(downloaded.rglob("*.json")), "no artifacts came back"
    dump = subprocess.run(
        [str(pg_bindir() / "pg_dump"), "-h", "127.0.0.1", "-p", str(team_server.pg_port),
         "-U", "irtune", "--data-only", TRACKING_DB],
        env=os.environ | {"PGPASSFILE": str(team_server.dir / "pgpass")},
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert run.info.run_id in dump, "the dump does not hold the run"
    logged = {
        "params": json.dumps(run.data.params),
        "tags": json.dumps(run.data.tags),
        "metric names": json.dumps(sorted(run.data.metrics)),
        "mlflow_record.json": (root / "data" / "eval" / "mlflow_record.json").read_text("utf-8"),
        "the stage's log": caplog.text,
        "the server's log": (team_server.dir / "mlflow.log").read_text("utf-8"),
        "the tracking database": dump,
    } | {
        f"artifact {p.relative_to(folder)}": p.read_bytes().decode("utf-8", "replace")
        for folder in (downloaded, stored)
        for p in folder.rglob("*")
        if p.is_file()
    }
    leaks = [(where, s) for where, text in logged.items() for s in secrets if s in text]
    assert not leaks, f"secret values leaked: {leaks}"


def test_logging_a_model_leaves_no_store_behind(
    repo: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Logging the model goes through MLflow's fluent API, whose set_tracking_uri also writes
    $MLFLOW_TRACKING_URI: afterwards the variable is as before (unset), so a later run in the
    same process still goes to its own store."""
    root, params = repo
    params["tracking"]["uri"] = f"sqlite:///{tmp_path / 'store.db'}"
    assert "MLFLOW_TRACKING_URI" not in os.environ
    _evaluate(root, params)
    assert len(_runs(params["tracking"]["uri"])) == 1
    assert "MLFLOW_TRACKING_URI" not in os.environ, os.environ["MLFLOW_TRACKING_URI"]


def test_an_experiment_created_meanwhile_is_joined_not_failed(tmp_path: Path) -> None:
    """Two queue workers logging their first runs at once both find no experiment, and both
    create it: the one that loses the race joins the experiment the other made (the e2e
    team-server queue spooled a run on this). The race window is forced: the store is real,
    only the first lookup is answered as if made just before the other worker's create."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    made = MlflowClient(tracking_uri=uri).create_experiment(EXPERIMENT)

    class LateClient(MlflowClient):
        looked = 0

        def get_experiment_by_name(self, name: str):
            self.looked += 1
            return None if self.looked == 1 else super().get_experiment_by_name(name)

    client = LateClient(tracking_uri=uri)
    assert tracking.experiment_id(client, EXPERIMENT, uri) == made
    assert client.looked == 2
