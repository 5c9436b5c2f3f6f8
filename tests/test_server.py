"""The team's MLflow server (``make server``): real PostgreSQL, real ``mlflow server`` with
basic auth, real HTTP.

It refuses requests without the right password, listens on loopback only, stores what
``irtune.tracking.log_record`` sends (params, metric histories, proxied artifacts) so that it
reads back with the right credentials, and a run refused for its login waits in the spool
until ``make sync`` delivers it, once. The server is the session's ``team_server``
(``conftest.py``), started by ``python -m irtune.server start``.
"""

from __future__ import annotations

import base64
import json
import logging
import shlex
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness import REPO
from team_server import TeamServer

from irtune import sync as sync_cli
from irtune import tracking
from irtune.config import Config, TrackingConfig

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def _status(url: str, auth: tuple[str, str] | None = None, method: str = "GET") -> int:
    """The HTTP status of one plain request (``auth``: basic-auth user and password)."""
    request = urllib.request.Request(url, method=method)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    if method == "POST":
        request.add_header("Content-Type", "application/json")
        request.data = json.dumps({"name": "should-not-exist"}).encode()
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_server_refuses_requests_without_the_right_password(team_server: TeamServer) -> None:
    """Reading, writing and the UI page all answer 401 to no login, a wrong password and an
    unknown user; reading and the UI answer 200 to the admin's own password."""
    create = f"{team_server.url}/api/2.0/mlflow/experiments/create"
    requests = [(team_server.url + SEARCH, "GET"), (create, "POST"), (team_server.url, "GET")]
    for url, method in requests:
        assert _status(url, method=method) == 401, f"{method} {url} without a login"
        wrong = (team_server.admin, team_server.password + "x")
        assert _status(url, wrong, method) == 401, f"{method} {url} with a wrong password"
        assert _status(url, ("nobody", team_server.password), method) == 401, "unknown user"
    login = (team_server.admin, team_server.password)
    assert _status(team_server.url + SEARCH, login) == 200
    assert _status(team_server.url, login) == 200, "the UI does not open with a login"
    with urllib.request.urlopen(team_server.url + "/health", timeout=60) as resp:
        assert resp.status == 200  # the liveness probe alone is open


def _listening(port: int) -> set[str]:
    """The local addresses of every socket listening on TCP ``port`` (``/proc/net/tcp*``)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) != port or fields[3] != "0A":  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel writes each 32-bit word in host (little-endian) order.
            words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
            if width == 8:
                found.add(".".join(str(b) for b in words[0]))
            else:
                found.add(":".join(w.hex() for w in words))
    return found


def test_the_server_and_its_database_listen_on_loopback_only(team_server: TeamServer) -> None:
    """MLflow and PostgreSQL, started with the defaults, listen on 127.0.0.1 and nowhere else
    (read from the kernel's socket table, not from the command line)."""
    assert _listening(team_server.port) == {"127.0.0.1"}
    assert _listening(team_server.pg_port) == {"127.0.0.1"}


def test_make_server_binds_to_loopback_unless_asked(tmp_path: Path) -> None:
    """`make -n server` starts the server on 127.0.0.1; HOST= changes only that."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")

    def host_of(*args: str) -> list[str]:
        out = subprocess.run(
            ["make", "-n", "server", *args], cwd=REPO, capture_output=True, text=True,
            timeout=60, check=True,
        ).stdout  # fmt: skip
        lines = out.replace("\\\n", " ").splitlines()
        command = next(line for line in lines if "irtune.server" in line)
        argv = shlex.split(command)
        return [argv[i + 1] for i, a in enumerate(argv) if a == "--host"]

    assert host_of() == ["127.0.0.1"]
    assert host_of("HOST=0.0.0.0") == ["0.0.0.0"]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty repository root (cwd, ``DVC_ROOT``) with files to attach as artifacts."""
    root = tmp_path / "repo"
    (root / "metrics").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_ROOT", str(root))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)  # log_record sets them if unset
    (root / "metrics" / "eval.json").write_text('{"rerank": {"ndcg_at_10": 0.5}}\n', "utf-8")
    (root / "metrics" / "train.json").write_text('{"summary": {"steps": 3}}\n', "utf-8")
    return root


def _record(root: Path, experiment: str, model: Path | None = None) -> dict:
    """A record as the evaluate stage builds it: every param, metrics, two curves, artifacts
    (and ``model``, the trained bi-encoder)."""
    cfg = Config()
    cfg.tracking.experiment = experiment
    history = {
        "summary": {"epochs": 1, "steps": 3},
        "loss_curve": [
            {"step": s, "epoch": s / 3, "loss": 2.0 - s / 2, "learning_rate": 1e-5 * s}
            for s in (1, 2, 3)
        ],
        "dev_curve": [{"step": 3, "epoch": 1.0, "dev_ndcg_at_10": 0.42}],
    }
    metrics = {"retrieve": {"ndcg_at_10": 0.4}, "rerank": {"ndcg_at_10": 0.5}}
    artifacts = [Path("metrics/eval.json"), Path("metrics/train.json")]
    return tracking.build_record(cfg, metrics, {}, history, artifacts, model_dir=model)


def _client(server: TeamServer, monkeypatch: pytest.MonkeyPatch, user: str, password: str):
    """An MlflowClient of ``server`` that logs in as ``user`` (MLflow's own variables)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(tracking_uri=server.url)


def _runs_of(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_a_record_lands_on_the_server_and_reads_back(
    team_server: TeamServer,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_bi_encoder: Path,
) -> None:
    """log_record, logged in as the admin, makes one finished run on the server holding the
    record's params, metrics, metric histories (every step), artifacts and the bi-encoder
    (which loads back through the server and embeds as the original), stored through the
    server in its artifacts folder; without a login the run cannot be read."""
    import mlflow
    import numpy
    from mlflow.exceptions import MlflowException

    from irtune.models import load_bi_encoder

    record = _record(workspace, "irtune-server-roundtrip", model=tiny_bi_encoder)
    client = _client(team_server, monkeypatch, team_server.admin, team_server.password)
    run_id = tracking.log_record(record, TrackingConfig(uri=team_server.url))
    assert run_id, "the run was not logged"
    assert list(tracking.pending_dir().glob("*.json")) == []

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.RUN_KEY_TAG] == record["run_key"]
    assert run.data.params == record["params"]
    assert run.data.params["tracking.uri"] == "", "the params hold no server address"
    for name, value in record["metrics"].items():
        assert run.data.metrics[name] == pytest.approx(value), name
    for name, points in record["histories"].items():
        history = client.get_metric_history(run_id, name)
        assert sorted((m.step, m.value) for m in history) == [
            (step, pytest.approx(value)) for step, value in sorted(points)
        ], name
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    listed = sorted(a.path for a in client.list_artifacts(run_id))
    assert listed == ["eval.json", "train.json"]
    fetched = Path(client.download_artifacts(run_id, "eval.json", str(workspace / "dl")))
    assert fetched.read_bytes() == (workspace / "metrics" / "eval.json").read_bytes()
    stored = [p for p in (team_server.dir / "artifacts").rglob("eval.json") if run_id in p.parts]
    assert [p.read_bytes() for p in stored] == [fetched.read_bytes()], stored
    with tracking.fluent_store(team_server.url):
        model = mlflow.sentence_transformers.load_model(run.data.tags[tracking.MODEL_URI_TAG])
    texts = ["statins and muscle pain"]
    expected = load_bi_encoder(str(tiny_bi_encoder)).encode(texts)
    assert numpy.array_equal(model.encode(texts), expected)

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException, match="401"):
        client.get_run(run_id)


def test_a_refused_login_waits_and_make_sync_delivers_it_once(
    team_server: TeamServer,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a wrong password log_record returns None, warns once that the server refused the
    credentials, and spools the record; the server holds nothing. make sync (irtune.sync's
    main) logged in as a team member then delivers it as one run, and again delivers nothing
    more."""
    from mlflow.server import get_app_client

    experiment = "irtune-server-spool"
    member, member_password = "member-alice", "alice-password-0123"
    _client(team_server, monkeypatch, team_server.admin, team_server.password)
    get_app_client("basic-auth", tracking_uri=team_server.url).create_user(member, member_password)

    record = _record(workspace, experiment)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    caplog.set_level(logging.WARNING)
    assert tracking.log_record(record, TrackingConfig(uri=team_server.url)) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    refused = [w for w in warnings if team_server.url in w and "refused the credentials" in w]
    assert len(refused) == 1, f"expected one warning naming the server, got {warnings}"
    assert "not-the-password" not in "\n".join(warnings)
    pending = sorted(tracking.pending_dir().glob("*.json"))
    assert [p.name for p in pending] == [f"{record['run_key']}.json"]
    assert "not-the-password" not in pending[0].read_text(encoding="utf-8")
    admin = _client(team_server, monkeypatch, team_server.admin, team_server.password)
    assert _runs_of(admin, experiment) == [], "a refused login logged something"

    # make sync is `python -m irtune.sync`: its main(), here in-process (test_tracking.py
    # runs the command itself), logged in as the member.
    _client(team_server, monkeypatch, member, member_password)
    caplog.set_level(logging.INFO)
    for sent in (1, 0):
        caplog.clear()
        with pytest.raises(SystemExit) as exit_info:
            sync_cli.main([])
        assert exit_info.value.code == 0, caplog.text
        assert f"Sent {sent} run(s)" in caplog.text, caplog.text
    assert list(tracking.pending_dir().glob("*.json")) == []
    admin = _client(team_server, monkeypatch, team_server.admin, team_server.password)
    runs = _runs_of(admin, experiment)
    assert len(runs) == 1, f"expected one run, found {len(runs)}"
    assert runs[0].data.tags[tracking.RUN_KEY_TAG] == record["run_key"]
    assert runs[0].data.params == record["params"]
    # The member's login made the experiment, so the member manages it.
    auth = get_app_client("basic-auth", tracking_uri=team_server.url)
    permission = auth.get_user_permission(member, "experiment", runs[0].info.experiment_id)
    assert permission.permission == "MANAGE", permission.to_json()


@pytest.mark.parametrize(
    ("password", "why"),
    [(None, "MLFLOW_AUTH_ADMIN_PASSWORD is not set"), ("short-pw", "at least 12"),
     ("password1234", "not MLflow's old default")],
)  # fmt: skip
def test_a_first_start_needs_a_real_admin_password(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    password: str | None,
    why: str,
) -> None:
    """Without MLFLOW_AUTH_ADMIN_PASSWORD, or with a short one or MLflow's old default, the
    first start stops with one error naming the variable, before it creates anything."""
    from irtune import server

    try:
        server.pg_bindir()
    except server.ServerError as exc:
        pytest.skip(str(exc))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    if password is not None:
        monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", password)
    folder = tmp_path / "server"
    with pytest.raises(SystemExit) as exit_info:
        server.main(["start", "--dir", str(folder)])
    assert exit_info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and why in errors[0], errors
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in errors[0]
    if password:
        assert password not in errors[0], "the error shows the password"
    assert not folder.exists(), "a refused start created the server's folder"


def test_a_teammate_logs_to_shared_experiments_and_a_forbidden_run_waits(
    team_server: TeamServer,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A teammate logs runs to an experiment the admin created (the default permission,
    EDIT); where the admin denied them an experiment the server answers 403, and log_record
    warns once and spools the run. (A grant of READ would not do: MLflow folds a user's
    grants with the default permission and keeps the higher.)"""
    from mlflow.server import get_app_client

    member, member_password = "member-bob", "bob-password-01234"
    admin = _client(team_server, monkeypatch, team_server.admin, team_server.password)
    auth = get_app_client("basic-auth", tracking_uri=team_server.url)
    auth.create_user(member, member_password)
    admin.create_experiment("irtune-server-shared")
    locked = admin.create_experiment("irtune-server-locked")
    auth.grant_user_permission(member, "experiment", locked, "DENY")

    _client(team_server, monkeypatch, member, member_password)
    shared = _record(workspace, "irtune-server-shared")
    assert tracking.log_record(shared, TrackingConfig(uri=team_server.url)), "not logged"
    assert list(tracking.pending_dir().glob("*.json")) == []

    caplog.set_level(logging.WARNING)
    forbidden = _record(workspace, "irtune-server-locked")
    assert tracking.log_record(forbidden, TrackingConfig(uri=team_server.url)) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    refused = [w for w in warnings if "refused the credentials" in w and "403" in w]
    assert len(refused) == 1, warnings
    pending = [p.name for p in tracking.pending_dir().glob("*.json")]
    assert pending == [f"{forbidden['run_key']}.json"]
    admin = _client(team_server, monkeypatch, team_server.admin, team_server.password)
    assert _runs_of(admin, "irtune-server-locked") == []
    assert len(_runs_of(admin, "irtune-server-shared")) == 1


def test_options_after_a_double_dash_go_to_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m irtune.server start ... -- <options>` (make server SERVER_ARGS=...) hands
    the options after `--` to `mlflow server` untouched, even ones that look like its own."""
    from irtune import server

    seen: list[server.Settings] = []
    monkeypatch.setattr(server, "start", lambda settings, timeout: seen.append(settings))
    server.main(["start", "--port", "5999", "--", "--allowed-hosts", "a.example", "--port", "1"])
    assert seen[0].port == 5999
    assert seen[0].extra_args == ("--allowed-hosts", "a.example", "--port", "1")
