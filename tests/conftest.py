"""Shared pytest setup: offline Hugging Face settings, session-wide tiny assets, and the team's
MLflow server."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before anything imports transformers / datasets, which read these at import time.
# setdefault so a developer can still override them from the shell.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    # Fast tokenizers warn (and can deadlock) when used before a fork, e.g. DataLoader workers.
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

# tests/ is not a package; make `from tiny_assets import ...` work in any import mode.
sys.path.insert(0, str(Path(__file__).parent))

from team_server import TeamServer, free_port  # noqa: E402
from tiny_assets import build_all  # noqa: E402


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the tiny dataset and models once per test session."""
    return build_all(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_beir(tiny_assets: dict[str, Path]) -> Path:
    """BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``."""
    return tiny_assets["beir"]


@pytest.fixture(scope="session")
def tiny_bi_encoder(tiny_assets: dict[str, Path]) -> Path:
    """Saved random-init SentenceTransformer (32-dim, normalized embeddings)."""
    return tiny_assets["bi_encoder"]


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_assets: dict[str, Path]) -> Path:
    """Saved random-init single-logit CrossEncoder."""
    return tiny_assets["cross_encoder"]


def _server_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "irtune.server", *args],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="session")
def team_server() -> Iterator[TeamServer]:
    """The team's MLflow server, started once per session by the real ``irtune.server start``
    (PostgreSQL cluster, basic auth, proxied artifacts) on free loopback ports, and stopped
    at the end. Skips where PostgreSQL or psycopg2 is missing."""
    from irtune.server import ServerError, pg_bindir

    try:
        pg_bindir()
    except ServerError as exc:
        pytest.skip(str(exc))
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (`make install` installs psycopg2-binary)")

    # In /tmp, not pytest's 0700 tmp folder: as root, PostgreSQL runs as the postgres user,
    # which must reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="irtune-server-"))
    admin, password = "team-admin", secrets.token_urlsafe(18)
    env = os.environ | {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
    }
    port, pg_port = free_port(), free_port()
    started = time.monotonic()
    proc = _server_cli(
        "start", "--dir", str(folder), "--port", str(port), "--pg-port", str(pg_port),
        "--workers", "1",
        # A throwaway cluster needs no crash safety: skip the disk flushes of its migrations.
        "--pg-setting", "fsync=off", "--pg-setting", "synchronous_commit=off",
        # Connections this process keeps open must not hold up the stop at the end.
        "--", "--uvicorn-opts", "--timeout-graceful-shutdown 2", env=env,
    )  # fmt: skip
    try:
        assert proc.returncode == 0, f"the server did not start:\n{proc.stderr[-4000:]}"
        print(f"[team server] up in {time.monotonic() - started:.1f}s", flush=True)
        yield TeamServer(f"http://127.0.0.1:{port}", admin, password, folder, pg_port)
    finally:
        _server_cli("stop", "--dir", str(folder), env=env)
        shutil.rmtree(folder, ignore_errors=True)
