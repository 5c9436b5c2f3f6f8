"""On a GPU, is irtune's training faster than the plain trainer script, and its encoding faster
than a plain ``SentenceTransformer.encode``?

The issue's yardstick: on an H200 the plain Sentence Transformers script trains the seed
recipe (MNRL, batch 128, 256 tokens, every train pair) in bf16 at 864 pairs/s. This section
measures, on the GPU it finds:

1. ``train``: irtune's train code path against that plain script (``bench_train``), both in
   ``train.precision`` bf16, same loss, rows, batch and sequence length; pairs/s of each,
   their ratio, and each side's test NDCG@10 (a speed-up must keep NDCG@10 within 0.003).
2. ``encode``: irtune's encode path against plain ``SentenceTransformer.encode``
   (``bench_encode``) on the GPU, and torch in fp32, fp16 and bf16 (``encode.precision``):
   docs/s and test NDCG@10 of each.

Without a CUDA GPU it measures nothing and records why; the CPU figures are the ``encode``
and ``train`` sections'. Run it on a GPU machine with e.g.::

    PYTHONPATH=src python benchmarks/bench.py --only gpu --data ../shared/data/nfcorpus \
        --model <folder>
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bench_encode import bench_encode
from bench_train import bench_train

log = logging.getLogger("bench.gpu")

#: The encode precisions measured on the GPU, fp32 first (the reference).
GPU_BACKENDS = [("torch", "fp32"), ("torch", "fp16"), ("torch", "bf16")]


def bench_gpu(
    data: Path,
    model_path: str,
    pairs: int,
    batch_size: int,
    max_seq_length: int,
    encode_batch_size: int,
    repeats: int,
) -> dict[str, Any]:
    """irtune vs the plain library calls on the GPU: bf16 training, half-precision encoding."""
    import torch

    if not torch.cuda.is_available():
        reason = (
            f"no CUDA GPU: torch {torch.__version__} sees none (torch.cuda.is_available() is "
            "False), so nothing was measured; run `make bench BENCH_ARGS='--only gpu'` on a "
            "GPU machine"
        )
        log.info("gpu: skipped, %s", reason)
        return {"skipped": reason}
    return {
        "device": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "train": bench_train(
            data,
            model_path,
            pairs=pairs,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            repeats=repeats,
            precision="bf16",
            score=True,
        ),
        "encode": bench_encode(
            data,
            model_path,
            batch_size=encode_batch_size,
            max_seq_length=max_seq_length,
            max_docs=0,
            repeats=repeats,
            backends=GPU_BACKENDS,
        ),
    }
