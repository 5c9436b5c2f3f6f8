"""Faster inference: ONNX Runtime or OpenVINO behind Sentence Transformers, half precision on a GPU.

``encode.backend`` (the bi-encoder) and ``rerank.backend`` (the cross-encoder) pick the engine
that runs the transformer (``torch``, ``onnx`` or ``openvino``) and ``*.precision`` its
arithmetic (``fp32``; ``int8`` dynamic quantization with ONNX Runtime; ``bf16`` with OpenVINO
on a CPU that has bfloat16 instructions; ``fp16`` or ``bf16`` with torch on a CUDA GPU).

Sentence Transformers' own ``backend="onnx"``/``"openvino"`` loaders need ``optimum-onnx`` or
``optimum-intel``, and no release of either accepts transformers 5.x (they pin
``transformers<4.58`` / ``<5.6``). So the export is done here, with nothing but
``torch.onnx`` and the two runtimes: the model is loaded as usual, its transformer is exported
to ONNX in a temporary folder (a second or two for MiniLM; nothing is written next to the
model, so DVC outputs stay as they were) and replaced by a module that runs the exported
graph. Tokenization, length-sorted batching, pooling and normalisation stay Sentence
Transformers' own, so ``model.encode`` and ``model.predict`` are unchanged for every caller:
documents (encode stage) and queries (retrieve stage) go through the same engine, and the
cross-encoder's graph ends at its logits, which ``predict`` turns into sigmoid scores as
before.
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irtune.config import check_backend
from irtune.errors import ConfigError

log = logging.getLogger(__name__)

#: Legacy (TorchScript) exporter opset: every op BERT-like encoders use, read by both runtimes.
OPSET = 17


class _ExportWrapper(torch.nn.Module):
    """The transformer as a function of positional tensors, for the TorchScript exporter
    (which cannot pass keyword arguments through transformers' forward decorators)."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output_name: str):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output_name = output_name

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        output = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        return output[self.output_name]


class RuntimeTransformer(torch.nn.Module):
    """Stands in for the Hugging Face model inside Sentence Transformers' ``Transformer`` module.

    It holds no parameters; ``forward`` feeds the tokenized batch to the runtime and returns
    the one output the module reads: the token embeddings as ``last_hidden_state`` (a
    bi-encoder's pooling takes them) or a cross-encoder's ``logits``.
    """

    def __init__(
        self, run, config, input_names: list[str], output_name: str, backend: str, precision: str
    ):
        super().__init__()
        self._run = run
        self.config = config
        self.input_names = input_names
        self.output_name = output_name
        self.backend = backend
        self.precision = precision

    def forward(self, **features: Any) -> dict[str, torch.Tensor]:
        feed = {name: features[name].cpu().numpy().astype(np.int64) for name in self.input_names}
        return {self.output_name: torch.from_numpy(self._run(feed))}


def _input_names(transformer) -> list[str]:
    # The inputs the tokenizer produces and the model takes (BERT: ids, mask, token types),
    # in a fixed order: the graph's inputs.
    produced = getattr(transformer.tokenizer, "model_input_names", None) or ["input_ids"]
    params = inspect.signature(transformer.model.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return [
        n
        for n in ("input_ids", "attention_mask", "token_type_ids")
        if n in produced and (takes_any or n in params)
    ]


def _output_name(transformer) -> str:
    # What the module reads off the model's output for text: ``last_hidden_state`` for a
    # bi-encoder, ``logits`` for a cross-encoder (Sentence Transformers 6's modality config).
    config = getattr(transformer, "modality_config", {}).get("text", {})
    name = config.get("method_output_name", "last_hidden_state")
    if config.get("method", "forward") != "forward" or not isinstance(name, str):
        raise ConfigError(
            f"the model reads {name!r} off its transformer's {config.get('method')!r}: only a "
            "plain forward's last_hidden_state or logits can run on onnx or openvino"
        )
    return name


def export_onnx(transformer, path: Path) -> tuple[list[str], str]:
    """Export a Sentence Transformers ``Transformer`` module's model to ONNX at ``path``.

    Batch and sequence axes are dynamic.

    Returns:
        The graph's input names, in order, and its one output's name (``last_hidden_state``
        or ``logits``).
    """
    names = _input_names(transformer)
    output = _output_name(transformer)
    hf_model = transformer.model.eval()
    example = torch.ones(2, 8, dtype=torch.long)
    inputs = tuple(example if n != "token_type_ids" else torch.zeros_like(example) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch", 1: "sequence"} if output == "last_hidden_state" else {0: "batch"}
    # The tracer warns about Python branches on shapes (padding checks); the axes that vary
    # are declared dynamic below, and the tests compare the export with torch.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ExportWrapper(hf_model, names, output),
            inputs,
            str(path),
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency, and deterministic
        )
    return names, output


def _onnx_runner(onnx_path: Path, precision: str, tmp: Path):
    import onnxruntime as ort

    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = tmp / "model_int8.onnx"
        # The quantizer logs a line per tensor on the root logger: silence it meanwhile.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.WARNING)
        # Per-channel int8 weights on the MatMuls only: the embedding tables and the
        # activations' range stay float, which keeps cosines to fp32 above ~0.99 on MiniLM
        # (per-tensor weights, or quantized Gathers, drop the worst document to ~0.90).
        try:
            quantize_dynamic(
                str(onnx_path),
                str(quantized),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
            )
        finally:
            root.setLevel(level)
        onnx_path = quantized
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The session reads the file now: the temporary folder may go once this returns.
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, feed)[0]

    return run


def _openvino_runner(onnx_path: Path, precision: str):
    import openvino as ov

    core = ov.Core()
    # OpenVINO picks bf16 by itself on CPUs that have it; fp32 must be asked for explicitly.
    compiled = core.compile_model(
        core.read_model(str(onnx_path)),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"},
    )
    if precision == "bf16" and compiled.get_property("INFERENCE_PRECISION_HINT") != ov.Type.bf16:
        log.warning("This CPU has no bfloat16 support: OpenVINO runs in f32")
    request = compiled.create_infer_request()

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        # Copy: the request reuses its output buffer on the next call.
        return np.array(request.infer(feed)[0], dtype=np.float32, copy=True)

    return run


def _torch_half(model, precision: str, section: str):
    """``model`` in half precision (``fp16`` or ``bf16``) on the GPU it loaded on.

    Raises:
        ConfigError: Without a CUDA GPU: half-precision torch on a CPU is slower than fp32,
            and falling back to fp32 would record a run as what it was not.
    """
    if model.device.type != "cuda":
        raise ConfigError(
            f"'{section}.precision' is {precision!r} on {section}.backend='torch', half "
            "precision on a CUDA GPU, but the model runs on the CPU: use fp32 (or onnx int8, "
            "openvino bf16)"
        )
    log.info("Running torch in %s on %s", precision, torch.cuda.get_device_name(model.device))
    return model.half() if precision == "fp16" else model.to(torch.bfloat16)


def use_backend(model, backend: str, precision: str = "fp32", section: str = "encode"):
    """Run ``model``'s transformer on ``backend`` at ``precision``, in place.

    Args:
        model: A SentenceTransformer or CrossEncoder whose first module is a Hugging Face
            ``Transformer``.
        backend: ``torch`` (unchanged), ``onnx`` or ``openvino``.
        precision: One of :data:`irtune.config.ENCODE_PRECISIONS` ``[backend]``.
        section: The config section the two come from (``encode`` or ``rerank``), for
            messages.

    Returns:
        ``model``, for chaining.

    Raises:
        ConfigError: On an unsupported backend/precision pair, or a model whose first
            module is not a Hugging Face transformer.
    """
    check_backend(backend, precision, section=section)
    if backend == "torch":
        return _torch_half(model, precision, section) if precision != "fp32" else model
    transformer = model[0]
    if not hasattr(transformer, "model") or not hasattr(transformer, "tokenizer"):
        raise ConfigError(
            f"{section}.backend={backend}: the model's first module is a "
            f"{type(transformer).__name__}, not a Hugging Face transformer"
        )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="irtune-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        names, output = export_onnx(transformer, onnx_path)
        if backend == "onnx":
            run = _onnx_runner(onnx_path, precision, Path(tmp))
        else:
            run = _openvino_runner(onnx_path, precision)
    config = transformer.model.config
    transformer.model = RuntimeTransformer(run, config, names, output, backend, precision)
    log.info(
        "%s on %s (%s), %d CPU threads; export took %.1fs",
        type(model).__name__,
        backend,
        precision,
        os.cpu_count() or 1,
        time.perf_counter() - start,
    )
    return model
