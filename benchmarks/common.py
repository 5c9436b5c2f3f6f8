"""What every benchmark section shares: the machine it ran on and the load around it.

The sections (``bench_encode``, ``bench_train``, ``bench_orchestration``, ``bench_index``)
each answer one question; ``bench.py`` runs them through :func:`section`, which records
``os.getloadavg()`` and ``os.cpu_count()`` before and after, because other jobs on a small
machine change every figure. Nothing here is run on its own.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The repository root: the checkout the benchmarks measure.
REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench")


def load_state() -> dict[str, Any]:
    """The 1, 5 and 15 minute load averages and the CPU count, now."""
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, memory, library versions."""
    import faiss
    import sentence_transformers
    import torch
    import transformers

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu or platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "faiss": faiss.__version__,
    }
    for name in ("onnxruntime", "openvino"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    return info


def wait_for_quiet(threshold: float, poll_s: float, max_wait_s: float) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``threshold`` (or ``max_wait_s`` passed).

    Other jobs on a 2-core machine halve every figure; the JSON says whether it was quiet.
    """
    start = time.monotonic()
    while (load := os.getloadavg()[0]) >= threshold and time.monotonic() - start < max_wait_s:
        log.info("1-minute load %.2f >= %.2f: waiting %.0fs", load, threshold, poll_s)
        time.sleep(poll_s)
    quiet = os.getloadavg()[0] < threshold
    if not quiet:
        log.warning("Load never fell below %.2f in %.0fs: running anyway", threshold, max_wait_s)
    return {
        "threshold": threshold,
        "waited_s": round(time.monotonic() - start, 1),
        "reached": quiet,
        **load_state(),
    }


def section(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one section, recording the load before and after and its wall time."""
    before = load_state()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return {
        "load_before": before,
        "load_after": load_state(),
        "wall_s": round(time.perf_counter() - start, 1),
        **result,
    }
