"""The end-to-end harness: the throwaway repository every scenario shares, an MLflow server
over its store, and a headless browser.

The scenarios (``test_pipeline.py``) share one repository (module-scoped) and run in file
order; each records that it passed, so a later one that needs it skips instead of failing
again (:meth:`E2ERepo.require`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from e2e_repo import BROWSER, DRIVER, VENV_BIN, E2ERepo, stop_queue
from harness import REPO
from tiny_assets import write_tiny_conf

from irtune.workspace import clean_env, copy_checkout, init_git


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_assets: dict[str, Path]):
    """A copy of this checkout with the tiny config, composed and committed, in its own git
    repository. The environment is the user's: the store is the default one, and nothing
    points stages at a library (dvc.yaml's own PYTHONPATH=src does)."""
    root = tmp_path_factory.mktemp("e2e") / "repo"
    root.mkdir()
    copy_checkout(REPO, root)
    env = clean_env(VENV_BIN)
    env.pop("PYTHONPATH", None)
    e2e = E2ERepo(root=root, env=env, assets=tiny_assets)
    init_git(root, env, author="irtune e2e")
    write_tiny_conf(root / "conf" / "config.yaml", tiny_assets)
    e2e.run("python", "-m", "irtune.compose")
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    assert params["dataset"]["source"] == str(tiny_assets["beir"]), params
    assert params["loss"]["name"] == "gist", params  # the default recipe's
    e2e.run("git", "add", "-A")
    e2e.run("git", "commit", "-q", "-m", "e2e: tiny config")
    print(f"[e2e] repository: {root}", flush=True)
    try:
        yield e2e
    finally:
        stop_queue(e2e)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(repo: E2ERepo):
    """``mlflow server`` on 127.0.0.1 over the e2e repository's store."""
    import urllib.request

    port = _free_port()
    log_path = repo.root.parent / "mlflow-server.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", repo.tracking_uri],
            cwd=repo.root, env=repo.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"mlflow server exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no answer:\n{log_path.read_text()[-4000:]}"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def browser():
    """Headless Chromium through Selenium; skips where Debian's chromium is not installed."""
    missing = [str(p) for p in (BROWSER, DRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed: `make browser` installs Debian's "
            "chromium and chromium-driver (apt-get, as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(BROWSER)
    # Headless, and nothing that phones home: this machine's network is closed.
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
