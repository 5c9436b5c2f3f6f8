"""The end-to-end repository: a throwaway git + DVC copy of this checkout, and the commands
a user types, run in it (the fixtures over it are in ``conftest.py``)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import REPO

from irtune.workspace import pid_alive, run_captured

VENV_BIN = REPO / ".venv" / "bin"
if not VENV_BIN.is_dir():  # a venv elsewhere: the one running pytest
    VENV_BIN = Path(sys.executable).parent
OUTPUT_TAIL = 12_000
ARTIFACTS = REPO / "test-artifacts"  # screenshots, kept for whoever reads the test run
BROWSER = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")


@dataclass
class E2ERepo:
    """The throwaway repository, the environment its commands run in, and what passed."""

    root: Path
    env: dict[str, str]
    assets: dict[str, Path]
    passed: set[str] = field(default_factory=set)
    first_run_id: str = ""
    exp_run_id: str = ""

    def run(self, *cmd: str, timeout: float = 1800, check: bool = True) -> str:
        """Run ``cmd`` in the repository; return stdout+stderr; fail showing them."""
        start = time.perf_counter()
        result = run_captured(cmd, cwd=self.root, env=self.env, timeout=timeout)
        took = time.perf_counter() - start
        print(f"[e2e] {' '.join(cmd)}: exit {result.returncode} in {took:.1f}s", flush=True)
        if check:
            assert result.returncode == 0, (
                f"`{' '.join(cmd)}` exited {result.returncode} in {self.root}; output tail:\n"
                f"{result.output[-OUTPUT_TAIL:]}"
            )
        return result.output

    def dvc(self, *args: str, **kwargs: Any) -> str:
        return self.run("dvc", *args, **kwargs)

    def require(self, phase: str) -> None:
        if phase not in self.passed:
            pytest.skip(f"needs {phase}, which failed or did not run")

    # --- git and DVC, as a user reads them ---------------------------------------------

    def head(self) -> str:
        return self.run("git", "rev-parse", "HEAD").strip()

    def exp_names(self) -> set[str]:
        out = self.dvc("exp", "list", "--name-only")
        return {line.strip() for line in out.splitlines() if line.strip()}

    def exp_data(self, source: str = "params.yaml") -> dict[str, dict[str, Any]]:
        """``dvc exp show --json``: experiment name -> the data of its params.yaml (or, with
        ``source="metrics/eval.json"``, of that metrics file)."""
        shown = json.loads(self.dvc("exp", "show", "--json"))
        found: dict[str, dict[str, Any]] = {}
        kind = "params" if source == "params.yaml" else "metrics"

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                name, data = node.get("name"), node.get("data")
                if name and isinstance(data, dict) and kind in data:
                    found[name] = (data[kind] or {}).get(source, {}).get("data", {})
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(shown)
        return found

    def queue_table(self) -> tuple[str, dict[str, int]]:
        """``dvc queue status`` and its count of tasks per status."""
        out = self.dvc("queue", "status")
        counts: dict[str, int] = {}
        for line in out.splitlines():
            cells = line.split()  # Task  Name  Created  Status
            if cells and cells[-1] in ("Queued", "Running", "Success", "Failed"):
                counts[cells[-1]] = counts.get(cells[-1], 0) + 1
        return out, counts

    def queue_logs(self) -> str:
        """The queue's table and every started task's log tail: what a failure shows."""
        out, _ = self.queue_table()
        logs = [out]
        for line in out.splitlines()[1:]:
            cells = line.split()
            if cells and cells[-1] in ("Running", "Success", "Failed"):
                logs.append(self.dvc("queue", "logs", cells[0], check=False)[-4000:])
        return "\n".join(logs)

    # --- MLflow --------------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def mlflow_runs(self, experiment: str = "irtune") -> list:
        """All runs of ``experiment`` in ``<root>/mlflow.db``, oldest first."""
        from mlflow.tracking import MlflowClient

        db = self.root / "mlflow.db"
        assert db.is_file(), f"no MLflow store at {db}; files at the root: {_ls(self.root)}"
        client = MlflowClient(tracking_uri=self.tracking_uri)
        found = client.get_experiment_by_name(experiment)
        names = [e.name for e in client.search_experiments()]
        assert found is not None, f"no '{experiment}' experiment in {db}; experiments: {names}"
        runs = client.search_runs([found.experiment_id], max_results=100)
        return sorted(runs, key=lambda r: r.info.start_time)

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def compare_rows(out: str) -> dict[str, list[str]]:
    """The rows of the table ``make compare`` prints: metric -> its other cells."""
    return {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| metric")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }


def _ls(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _worker_pids(root: Path) -> list[int]:
    """PIDs of this repository's `dvc queue` workers, from dvc-task's process records."""
    pids = []
    for info in (root / ".dvc" / "tmp").rglob("dvc-exp-worker-*.json"):
        try:
            pid = json.loads(info.read_text()).get("pid")
        except (OSError, ValueError):
            continue
        if isinstance(pid, int) and pid_alive(pid):
            pids.append(pid)
    return pids


def stop_queue(repo: E2ERepo) -> None:
    """Stop the queue workers this test started; never leave processes behind."""
    if not (repo.root / ".dvc" / "tmp" / "exps").exists():
        return
    print(f"[e2e] queue workers before stop: {_worker_pids(repo.root)}", flush=True)
    repo.dvc("queue", "stop", "--kill", check=False, timeout=120)
    deadline = time.monotonic() + 60
    while (pids := _worker_pids(repo.root)) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in pids:  # workers we spawned that ignored the shutdown request
        print(f"[e2e] queue worker {pid} still alive; sending SIGTERM", flush=True)
        os.kill(pid, signal.SIGTERM)
