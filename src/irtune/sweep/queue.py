"""Running a sweep: its members queued as DVC experiments, run by DVC's queue workers.

``run`` validates every member's config first, queues the members, starts DVC's queue
workers, logs progress until every member has finished, and writes the report. A failed
member does not stop the others; it is reported, and the exit status is 1.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from irtune.sweep.definition import Sweep, load_sweep, members, sweep_config, validate_members
from irtune.sweep.report import open_sweep_run, write_report
from irtune.workspace import pid_alive, run_captured

log = logging.getLogger(__name__)

DONE = ("Success", "Failed")
ORPHANED = "Orphaned"
#: A member no longer in DVC's queue (``dvc queue remove``): it will never run.
REMOVED = "Removed"
#: The statuses of a member that will not run (on) and counts as failed.
LOST = ("Failed", ORPHANED, REMOVED)


def _dvc(*args: str) -> str:
    result = run_captured(["dvc", *args])
    if result.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed:\n{result.output}")
    return result.output


def queue_status() -> tuple[dict[str, str], int]:
    """``dvc queue status``: ``({experiment name: status}, number of live workers)``."""
    status, workers = {}, 0
    for line in _dvc("queue", "status").splitlines()[1:]:
        if found := re.match(r"Worker status: (\d+) active, (\d+) idle", line.strip()):
            workers = int(found[1]) + int(found[2])
            continue
        parts = line.split()
        # Task  Name  Created (1-3 words)  Status; a nameless task shows "None".
        if len(parts) >= 4:
            status[parts[1]] = parts[-1]
    return status, workers


def alive_here(root: Path = Path(".")) -> tuple[set[str], int]:
    """What of this repository's queue is alive, from the process records DVC keeps: the
    members whose ``dvc exp exec-run`` process runs (``.dvc/tmp/exps/run/<rev>/<rev>.run``
    names the member, ``<rev>.pid`` holds its process), and the workers whose process runs
    (``.dvc/tmp/exps/celery/dvc-exp-worker-<n>.json``).

    ``dvc queue status`` counts workers by asking them over Celery, and a worker whose
    member trains on a loaded machine may not answer in time: there, 0 workers means "no
    answer", not "none alive". The processes are the ground truth.
    """
    exps = root / ".dvc" / "tmp" / "exps"
    running = set()
    for info in exps.glob("run/*/*.run"):
        try:
            name = json.loads(info.read_text(encoding="utf-8"))["name"]
            pid = int(info.with_suffix(".pid").read_text(encoding="utf-8").strip())
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or a run of another kind
        if name and pid_alive(pid):
            running.add(name)
    workers = 0
    for info in exps.glob("celery/dvc-exp-worker-*.json"):
        try:
            pid = json.loads(info.read_text(encoding="utf-8"))["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        workers += isinstance(pid, int) and pid_alive(pid)
    return running, workers


def wait_for_idle_queue(timeout_s: float, poll_s: float) -> None:
    """Wait for the workers of an earlier ``dvc queue start`` to exit.

    A worker that is shutting down because its queue ran empty can take a task queued at
    that moment down with it, leaving the task "Running" with no worker: queue only once
    the old workers are gone.
    """
    deadline = time.monotonic() + timeout_s
    while (workers := queue_status()[1]) and time.monotonic() < deadline:
        log.info("Waiting for %d DVC queue worker(s) of an earlier run to exit", workers)
        time.sleep(poll_s)
    if workers:
        log.warning("%d earlier DVC queue worker(s) still alive; queueing anyway", workers)


def queue(sweep: Sweep, sweep_id: str, overrides: list[str]) -> list[str]:
    """Queue every member with one ``dvc exp run --queue``; return their experiment names.

    Members are named ``<sweep>-<id>-<n>`` (DVC numbers a named sweep's members itself).
    """
    prefix = f"{sweep.name}-{sweep_id}"
    args = ["exp", "run", "--queue", "--name", prefix]
    for override in overrides + [f"{k}={v}" for k, v in sweep.axes.items()]:
        args += ["-S", override]
    out = _dvc(*args)
    names = re.findall(r"Queued experiment '([^']+)'", out)
    if not names:
        raise RuntimeError(f"dvc queued nothing:\n{out}")
    return names


def wait(
    names: list[str],
    poll_s: float,
    jobs: int = 1,
    orphan_after_s: float = 120.0,
    root: Path = Path("."),
) -> dict[str, str]:
    """Log progress until every member is done; return their final statuses.

    When neither DVC nor the process records (:func:`alive_here`) show a live worker or a
    live member for ``orphan_after_s``, a member still waiting gets workers started again,
    and one left "Running" (its worker died) is reported as ``Orphaned`` rather than waited
    for forever. A member that leaves DVC's queue without finishing (``dvc queue remove``),
    or is not in it ``orphan_after_s`` after the wait began, is ``Removed``.
    """
    last, no_worker_since = None, None
    orphaned, removed, seen = set(), set(), set()
    began = time.monotonic()
    while True:
        status, workers = queue_status()
        running, worker_processes = alive_here(root)
        seen |= {n for n in names if n in status}
        grace_over = time.monotonic() - began > orphan_after_s
        for name in names:
            if name not in status and name not in removed and (name in seen or grace_over):
                log.error("Member %s is no longer in DVC's queue (removed?): it will not run", name)
                removed.add(name)
        ours = {name: status.get(name, "Queued") for name in names}
        ours |= {name: REMOVED for name in removed} | {name: ORPHANED for name in orphaned}
        pending = [n for n in names if ours[n] not in (*DONE, *LOST)]
        if workers or worker_processes or running or not pending:
            no_worker_since = None
        elif no_worker_since is None:
            no_worker_since = time.monotonic()
        elif time.monotonic() - no_worker_since > orphan_after_s:
            # No worker for a while (a worker takes seconds to show up after a start).
            for n in pending:
                if ours[n] == "Running":
                    log.error("Member %s is 'Running' but no worker runs it: orphaned", n)
                    orphaned.add(n)
                    ours[n] = ORPHANED
            if any(ours[n] == "Queued" for n in pending):
                log.warning("No DVC queue worker is alive; starting %d again", jobs)
                _dvc("queue", "start", "--jobs", str(jobs))
            no_worker_since = None
        done = [n for n in names if ours[n] in (*DONE, *LOST)]
        failed = [n for n in names if ours[n] in LOST]
        running = [n for n in names if ours[n] == "Running"]
        line = (
            f"{len(done)}/{len(names)} done ({len(failed)} failed); "
            f"running: {', '.join(running) or '-'}"
        )
        if line != last:
            log.info("Sweep progress: %s", line)
            last = line
        if len(done) == len(names):
            return ours
        time.sleep(poll_s)


def run(
    name: str, overrides: list[str], jobs: int = 1, poll_s: float = 10.0, root: Path = Path(".")
) -> int:
    """Run a sweep end to end and write its report.

    With ``sweep.seeds`` (in the sweep file or ``overrides``), every member is repeated with
    each seed as its ``train.seed``; the report treats the replicates as one recipe.

    Args:
        name: The sweep (``conf/sweep/<name>.yaml``).
        overrides: Extra overrides for every member, e.g. ``dataset.source=...`` or
            ``sweep.seeds=[42,43,44]``; one that names an axis (``loss=mnrl,cosent``)
            replaces that axis's values instead.
        jobs: DVC queue workers. On a CPU machine 1 is fastest: two trainings fight for
            the same cores.
        poll_s: Seconds between progress checks.
        root: The repository.

    Returns:
        The exit status: 0 if every member succeeded, 1 otherwise.
    """
    sweep, overrides = load_sweep(name, root).with_overrides(overrides)
    sweep_id = datetime.now(UTC).strftime("%m%d-%H%M%S")
    shared = [f"sweep={name}", f"sweep.id={sweep_id}", *overrides]
    cfg = sweep_config(name, root, shared[1:])
    sweep = sweep.with_seeds(cfg.sweep.seeds)

    # 1. Every member's config must be valid before one of them costs any time.
    all_members = members(sweep, shared)
    validate_members(all_members, root)
    log.info("Sweep %s (id %s): %d members over %s", name, sweep_id, len(all_members), sweep.axes)
    open_sweep_run(name, sweep_id, cfg)  # the MLflow parent run, shown while members run

    # 2. Queue them, once the workers of an earlier run are gone. Tasks someone queued
    #    earlier would run too: say so.
    wait_for_idle_queue(timeout_s=300, poll_s=poll_s)
    stale = [n for n, s in queue_status()[0].items() if s == "Queued"]
    if stale:
        log.warning("The DVC queue already holds %s; they will run with this sweep", stale)
    names = queue(sweep, sweep_id, shared)

    # 3. Run them in DVC's queue workers, each in its own temporary copy of the repo.
    _dvc("queue", "start", "--jobs", str(jobs))
    try:
        final = wait(names, poll_s, jobs, root=root)
    except KeyboardInterrupt:
        log.warning("Stopped waiting; the members go on running (`dvc queue kill` stops them)")
        raise

    # 4. Report: the table and plots, from the members' MLflow runs.
    failed = [n for n in names if final[n] in LOST]
    for member in failed:
        tail = run_captured(["dvc", "queue", "logs", member]).output.splitlines()[-15:]
        log.error(
            "Member %s failed; the end of `dvc queue logs %s`:\n%s", member, member, "\n".join(tail)
        )
    write_report(name, sweep_id, root=root, failed=failed)
    if failed:
        log.error("%d of %d members failed: %s", len(failed), len(names), ", ".join(failed))
        return 1
    log.info("All %d members succeeded; `make exps` shows them in DVC", len(names))
    return 0
