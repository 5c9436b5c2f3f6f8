"""What does DVC's orchestration cost, and does a change rerun only the stages it touches?

A throwaway copy of this checkout (git + DVC, :mod:`irtune.workspace`) on the tiny test
assets with the one tiny config (``tests/tiny_assets.py``): the time of the first
``dvc repro`` (every stage), of each no-op ``dvc repro`` (nothing to rerun: what DVC's own
bookkeeping costs), and which stages rerun after a change to ``rerank.top_k`` and then to
``retrieve.top_k``, next to the stages that should (:data:`EXPECTED`). No model or dataset
is needed: the tiny assets are built in a few seconds.

Run it through the runner::

    PYTHONPATH=src python benchmarks/bench.py --only orchestration
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common import REPO

#: The params changed one after the other, as (section, key, value): each value differs
#: from the tiny config's (``rerank.top_k`` 20, ``retrieve.top_k`` 20).
CHANGES = (("rerank", "top_k", 5), ("retrieve", "top_k", 15))
#: The stages each change must rerun: the stage that reads the param and those after it.
EXPECTED = {
    "rerank.top_k": ["rerank", "evaluate"],
    "retrieve.top_k": ["retrieve", "rerank", "evaluate"],
}


def _run(cmd: Sequence[str], root: Path, env: Mapping[str, str]) -> tuple[str, float]:
    """Run ``cmd`` in ``root``: its output and the seconds it took.

    Raises:
        RuntimeError: If it fails; the message ends with its output.
    """
    from irtune.workspace import run_captured

    start = time.perf_counter()
    result = run_captured(cmd, cwd=root, env=env)
    took = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(
            f"`{' '.join(cmd)}` exited {result.returncode}:\n{result.output[-4000:]}"
        )
    return result.output, took


def _stages(output: str) -> list[str]:
    """The stages a ``dvc repro`` ran, in order."""
    return re.findall(r"Running stage '([^']+)'", output)


def bench_orchestration(noop_repeats: int) -> dict[str, Any]:
    """No-op ``dvc repro`` time, and which stages a top_k change reruns, on the tiny assets."""
    if str(REPO / "tests") not in sys.path:  # tests/ is not a package
        sys.path.insert(0, str(REPO / "tests"))
    from tiny_assets import build_all, write_tiny_conf

    from irtune.compose import compose
    from irtune.workspace import clean_env, copy_checkout, init_git

    with tempfile.TemporaryDirectory(prefix="irtune-bench-dvc-") as tmp:
        assets = build_all(Path(tmp) / "assets")
        root = Path(tmp) / "repo"
        copy_checkout(REPO, root)
        # DVC runs every stage with the `python` first on PATH: the one running this.
        env = clean_env(Path(sys.executable).parent)
        init_git(root, env, author="irtune bench")
        config = root / "conf" / "config.yaml"
        write_tiny_conf(config, assets)
        compose([], root=root)  # as `make params`: plain `dvc repro` reads params.yaml
        _run(["git", "add", "-A"], root, env)
        _run(["git", "commit", "-q", "-m", "bench: tiny config"], root, env)

        out, first_s = _run(["dvc", "repro"], root, env)
        first = _stages(out)
        noop_s, noop_ran = [], []
        for _ in range(noop_repeats):
            out, took = _run(["dvc", "repro"], root, env)
            noop_s.append(round(took, 2))
            noop_ran += _stages(out)
        changes, changed = {}, {}
        for name, key, value in CHANGES:
            changed.setdefault(name, {})[key] = value  # the earlier changes stay
            write_tiny_conf(config, assets, **changed)
            compose([], root=root)
            out, took = _run(["dvc", "repro"], root, env)
            changes[f"{name}.{key}"] = {"reran": _stages(out), "seconds": round(took, 1)}
    return {
        "workspace": "a git + DVC copy of this checkout on the tiny test assets",
        "first_repro_s": round(first_s, 1),
        "first_repro_stages": first,
        "noop_repro_s": noop_s,
        "noop_repro_median_s": round(statistics.median(noop_s), 2),
        "noop_repro_reran": noop_ran,
        "changes": changes,
        "expected": EXPECTED,
    }
