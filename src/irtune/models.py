"""Loading and saving models: the bi-encoder, the cross-encoder, and the bi-encoder on a
faster inference engine.

Every stage that needs a model (train, encode, retrieve, rerank, baseline, and prepare's
mining and labelling) loads it here, so a hub id and a local folder behave the same
everywhere, ``trust_remote_code`` is always passed explicitly (off unless the config turns
it on), and a folder without weights is one clear error rather than a traceback.
"""

from __future__ import annotations

import errno
import logging
import math
from pathlib import Path
from typing import Any

from irtune.config import Config, check_backend
from irtune.errors import ConfigError
from irtune.io import atomic_path
from irtune.mirror import resolve

log = logging.getLogger(__name__)


def load_bi_encoder(
    name_or_path: str,
    trust_remote_code: bool = False,
    max_seq_length: int = 0,
    query_prompt: str = "",
    document_prompt: str = "",
    **kwargs: Any,
):
    """Load a SentenceTransformer from the hub or a local folder.

    Args:
        name_or_path: Hub id or local folder.
        trust_remote_code: Run code shipped with the model (off unless the config says so).
        max_seq_length: Truncation to set; 0 keeps the model's own.
        query_prompt: The model's ``query`` prompt, replacing its own; "" keeps its own.
        document_prompt: Its ``document`` prompt, likewise.
        **kwargs: Passed to SentenceTransformer.

    Raises:
        ConfigError: If a local folder holds no loadable model.
    """
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(
            resolve(name_or_path), trust_remote_code=trust_remote_code, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load bi-encoder '{name_or_path}': {exc}") from None
    if max_seq_length:
        truncate(model, max_seq_length)
    # Queries are encoded with encode_query and documents with encode_document, which use
    # these two prompts; a saved model keeps them, so every later stage uses the same ones.
    for name, prompt in (("query", query_prompt), ("document", document_prompt)):
        if prompt:
            model.prompts[name] = prompt
    return model


def truncate(model, max_seq_length: int) -> None:
    """Set ``model``'s truncation to ``max_seq_length`` tokens.

    A static-embedding model (Sentence Transformers' ``StaticEmbedding``: the mean of per-token
    vectors) reads every token and has no length to set (its ``max_seq_length`` is infinite):
    it is left as it is.
    """
    current = model.max_seq_length
    if isinstance(current, float) and math.isinf(current):
        log.info(
            "%s reads every token: max_seq_length=%d ignored",
            type(model[0]).__name__,
            max_seq_length,
        )
        return
    model.max_seq_length = max_seq_length


def load_base_model(cfg: Config, name_or_path: str = "", max_seq_length: int = 0):
    """The base model (or ``name_or_path``, e.g. a mining model) as the ``model`` section
    sets it up: ``trust_remote_code``, and the prompts when it is the base model itself.

    Args:
        cfg: The config.
        name_or_path: Another bi-encoder to load; "" (or ``model.base``) loads the base.
        max_seq_length: Truncation to set; 0 keeps the model's own.
    """
    base = name_or_path in ("", cfg.model.base)
    return load_bi_encoder(
        cfg.model.base if base else name_or_path,
        trust_remote_code=cfg.model.trust_remote_code,
        max_seq_length=max_seq_length,
        query_prompt=cfg.model.query_prompt if base else "",
        document_prompt=cfg.model.document_prompt if base else "",
    )


def prompts(model) -> tuple[str, str]:
    """The ``query`` and ``document`` prompts ``model`` encodes with ("" for none)."""
    return model.prompts.get("query") or "", model.prompts.get("document") or ""


def load_encoder(
    name_or_path: str,
    backend: str = "torch",
    precision: str = "fp32",
    trust_remote_code: bool = False,
    max_seq_length: int = 0,
):
    """Load a bi-encoder for inference on ``backend`` (see :func:`irtune.backends.use_backend`).

    Args:
        name_or_path: Hub id or local folder.
        backend: ``torch``, ``onnx`` or ``openvino``.
        precision: ``fp32``, or ``int8`` (onnx) / ``bf16`` (openvino).
        trust_remote_code: Run code shipped with the model.
        max_seq_length: Truncation to set; 0 keeps the model's own.

    Raises:
        ConfigError: If the model cannot be loaded, or the backend/precision pair is invalid.
    """
    from irtune.backends import use_backend

    check_backend(backend, precision)
    model = load_bi_encoder(
        name_or_path, trust_remote_code=trust_remote_code, max_seq_length=max_seq_length
    )
    return use_backend(model, backend, precision)


#: ``rerank.model``'s value for the cross-encoder the train_reranker stage trains.
TRAINED = "trained"
#: What the train_reranker stage leaves in its output folder when it trains nothing.
NOT_TRAINED = "NOT_TRAINED"


def trained_cross_encoder(folder: Path | None) -> str:
    """The train_reranker stage's cross-encoder folder, for ``rerank.model: trained``.

    Raises:
        ConfigError: If the stage trained none (its note says why).
    """
    if folder is None or (folder / NOT_TRAINED).exists():
        why = (folder / NOT_TRAINED).read_text(encoding="utf-8").strip() if folder else ""
        raise ConfigError(
            "rerank.model is 'trained' but the train_reranker stage trained no cross-encoder"
            + (f": {why}" if why else "")
        )
    return str(folder)


def load_cross_encoder(
    name_or_path: str,
    max_length: int,
    trust_remote_code: bool = False,
    backend: str = "torch",
    precision: str = "fp32",
):
    """Load a CrossEncoder from the hub or a local folder, for inference on ``backend``
    (see :func:`irtune.backends.use_backend`).

    Args:
        name_or_path: Hub id or local folder.
        max_length: Truncation of each (query, document) pair, in tokens.
        trust_remote_code: Run code shipped with the model.
        backend: ``torch``, ``onnx`` or ``openvino`` (``rerank.backend``).
        precision: ``fp32``; ``int8`` (onnx), ``bf16`` (openvino); ``fp16``/``bf16``
            (torch on a CUDA GPU) (``rerank.precision``).

    Raises:
        ConfigError: If a local folder holds no loadable model, or the backend/precision
            pair is invalid.
    """
    from sentence_transformers import CrossEncoder

    from irtune.backends import use_backend

    check_backend(backend, precision, section="rerank")
    try:
        model = CrossEncoder(
            resolve(name_or_path), max_length=max_length, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load cross-encoder '{name_or_path}': {exc}") from None
    return use_backend(model, backend, precision, section="rerank")


def save_model(model, out_dir: Path) -> None:
    """Save a SentenceTransformer into ``out_dir``, atomically.

    Raises:
        OSError: If a file cannot be written (disk full...), naming ``out_dir``; safetensors
            reports such errors as its own exception type, which would escape as a traceback.
    """
    from safetensors import SafetensorError

    with atomic_path(out_dir) as tmp:
        try:
            model.save(str(tmp))
        except SafetensorError as exc:
            raise OSError(errno.EIO, f"cannot write the model: {exc}", str(out_dir)) from exc
