"""encode.backend / encode.precision and rerank.backend / rerank.precision: ONNX Runtime and
OpenVINO embed and score like torch, the stages use the configured engine (documents, queries,
(query, document) pairs), and bad values fail naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import StageWorkspace, tiny_params

from irtune.backends import RuntimeTransformer
from irtune.config import ENCODE_PRECISIONS, validate
from irtune.encode import read_embeddings
from irtune.errors import ConfigError
from irtune.models import load_cross_encoder, load_encoder
from irtune.runs import read_trec_run

TEXTS = [
    "Vitamin D supplementation increased bone mineral density in older adults.",
    "statin muscle pain side effects",
    "Sugary drinks raised the incidence of type 2 diabetes. " * 6,  # past max_seq_length
    "soy",
]
#: Worst cosine to torch's embedding each precision must keep on the tiny model.
MIN_COSINE = {"fp32": 0.9999, "bf16": 0.99, "int8": 0.98}
PAIRS = [(b, p) for b, precisions in ENCODE_PRECISIONS.items() if b != "torch" for p in precisions]
#: (query, document) pairs for the cross-encoder, of different lengths (one past max_length).
CE_PAIRS = [(TEXTS[1], TEXTS[0]), (TEXTS[3], TEXTS[2]), (TEXTS[0], TEXTS[3]), (TEXTS[1], TEXTS[2])]
#: Largest difference of a cross-encoder logit from torch's, as a fraction of torch's largest
#: logit, each precision may make on the tiny model. Its random weights give nearly equal
#: logits to every pair, so only fp32 is asked to keep their order; what int8 and bf16 do to
#: a trained reranker's NDCG@10 is measured by `make bench` (its rerank section).
MAX_LOGIT_ERROR = {"fp32": 1e-4, "bf16": 0.2, "int8": 0.2}
CE_LENGTH = 32  # truncates the long pair: the export must take the truncated batch


def _runtime(backend: str) -> None:
    pytest.importorskip(
        "onnxruntime" if backend == "onnx" else "openvino",
        reason=f"encode.backend={backend} needs its runtime, a pinned dependency: make install",
    )


@pytest.fixture(scope="module")
def torch_embeddings(tiny_bi_encoder: Path) -> np.ndarray:
    model = load_encoder(str(tiny_bi_encoder))
    return model.encode(TEXTS, batch_size=2, normalize_embeddings=True)


@pytest.mark.parametrize(("backend", "precision"), PAIRS)
def test_backend_embeds_like_torch(
    tiny_bi_encoder: Path, torch_embeddings: np.ndarray, backend: str, precision: str
) -> None:
    _runtime(backend)
    model = load_encoder(str(tiny_bi_encoder), backend, precision)
    assert isinstance(model[0].model, RuntimeTransformer), type(model[0].model)
    # Batches of 2 with texts of different lengths: padding and dynamic shapes are exercised.
    emb = model.encode(TEXTS, batch_size=2, normalize_embeddings=True)
    assert emb.shape == torch_embeddings.shape
    assert emb.dtype == np.float32
    cosine = np.sum(emb * torch_embeddings, axis=1)
    assert cosine.min() > MIN_COSINE[precision], cosine
    assert model.get_embedding_dimension() == torch_embeddings.shape[1]


@pytest.fixture(scope="module")
def torch_logits(tiny_cross_encoder: Path) -> np.ndarray:
    model = load_cross_encoder(str(tiny_cross_encoder), CE_LENGTH)
    return model.predict(CE_PAIRS, batch_size=2, activation_fn=torch.nn.Identity())


@pytest.mark.parametrize(("backend", "precision"), PAIRS)
def test_cross_encoder_backend_scores_like_torch(
    tiny_cross_encoder: Path, torch_logits: np.ndarray, backend: str, precision: str
) -> None:
    """The cross-encoder's graph ends at its one logit: the same logits as torch (within the
    precision's error), hence the same sigmoid scores and order."""
    _runtime(backend)
    model = load_cross_encoder(
        str(tiny_cross_encoder), CE_LENGTH, backend=backend, precision=precision
    )
    assert isinstance(model[0].model, RuntimeTransformer), type(model[0].model)
    logits = model.predict(CE_PAIRS, batch_size=2, activation_fn=torch.nn.Identity())
    assert logits.shape == torch_logits.shape == (len(CE_PAIRS),)
    error = float(np.abs(logits - torch_logits).max() / np.abs(torch_logits).max())
    assert error < MAX_LOGIT_ERROR[precision], (logits, torch_logits)
    scores = model.predict(CE_PAIRS, batch_size=2, activation_fn=torch.nn.Sigmoid())
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits)), rtol=1e-5)
    if precision == "fp32":
        assert list(np.argsort(logits)) == list(np.argsort(torch_logits))


@pytest.mark.parametrize(("backend", "precision"), PAIRS)
def test_backend_is_deterministic(tiny_bi_encoder: Path, backend: str, precision: str) -> None:
    _runtime(backend)
    first = load_encoder(str(tiny_bi_encoder), backend, precision).encode(TEXTS)
    second = load_encoder(str(tiny_bi_encoder), backend, precision).encode(TEXTS)
    np.testing.assert_array_equal(first, second)


def test_torch_backend_leaves_the_model_alone(tiny_bi_encoder: Path) -> None:
    model = load_encoder(str(tiny_bi_encoder), "torch", "fp32")
    assert not isinstance(model[0].model, RuntimeTransformer)
    assert any(True for _ in model.parameters())


@pytest.mark.parametrize(
    ("encode", "message"),
    [
        (
            {"backend": "tensorrt"},
            "'encode.backend' is 'tensorrt'; expected one of ['torch', 'onnx', 'openvino']",
        ),
        (
            {"precision": "int8"},
            "'encode.precision' is 'int8', which encode.backend='torch' does not offer; "
            "expected one of ['fp32', 'fp16', 'bf16'] (int8 needs encode.backend=onnx)",
        ),
        (
            {"backend": "onnx", "precision": "bf16"},
            "'encode.precision' is 'bf16', which encode.backend='onnx' does not offer; "
            "expected one of ['fp32', 'int8'] (bf16 needs encode.backend=torch or openvino)",
        ),
        ({"backend": "openvino", "precision": "fp16"}, "'encode.precision' is 'fp16'"),
    ],
)
def test_bad_backend_fails_naming_the_key(encode: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate({"encode": encode}, source="params.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("params.yaml: ")


@pytest.mark.parametrize(
    ("rerank", "message"),
    [
        (
            {"backend": "tensorrt"},
            "'rerank.backend' is 'tensorrt'; expected one of ['torch', 'onnx', 'openvino']",
        ),
        (
            {"backend": "onnx", "precision": "bf16"},
            "'rerank.precision' is 'bf16', which rerank.backend='onnx' does not offer; "
            "expected one of ['fp32', 'int8'] (bf16 needs rerank.backend=torch or openvino)",
        ),
    ],
)
def test_bad_rerank_backend_fails_naming_the_key(rerank: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate({"rerank": rerank}, source="params.yaml")
    assert message in str(err.value)


def test_load_encoder_checks_the_pair(tiny_bi_encoder: Path) -> None:
    with pytest.raises(ConfigError, match=r"encode\.precision"):
        load_encoder(str(tiny_bi_encoder), "torch", "int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_torch_half_precision_needs_a_gpu(tiny_bi_encoder: Path, precision: str) -> None:
    """Half-precision torch weights are a GPU's: on a CPU the stage stops, naming the key,
    rather than encode in fp32 under another name."""
    with pytest.raises(ConfigError, match=rf"'encode.precision' is '{precision}'.*CUDA GPU"):
        load_encoder(str(tiny_bi_encoder), "torch", precision)
    with pytest.raises(ConfigError, match=rf"'rerank.precision' is '{precision}'.*CUDA GPU"):
        load_cross_encoder(str(tiny_bi_encoder), 64, backend="torch", precision=precision)


def test_stages_embed_documents_and_queries_with_the_backend(
    tmp_path: Path, tiny_assets: dict[str, Path]
) -> None:
    """encode, index and retrieve on the onnx int8 backend give the torch pipeline's ranking."""
    _runtime("onnx")
    runs = {}
    for backend, precision in (("torch", "fp32"), ("onnx", "int8")):
        params = tiny_params(
            tiny_assets,
            encode={"batch_size": 16, "backend": backend, "precision": precision},
            retrieve={"top_k": 5},
        )
        ws = StageWorkspace(tmp_path / backend, params, tiny_assets)
        ws.raw()
        ws.model()
        ws.run_all(["encode", "index", "retrieve"])
        runs[backend] = read_trec_run(ws.path("data/runs/retrieve.trec"))
        assert json.loads(ws.path("metrics/retrieve.json").read_text())["mode"] == "dense"
    torch_emb, ids = read_embeddings(tmp_path / "torch" / "data" / "embeddings")
    onnx_emb, onnx_ids = read_embeddings(tmp_path / "onnx" / "data" / "embeddings")
    assert ids == onnx_ids
    assert np.sum(torch_emb * onnx_emb, axis=1).min() > MIN_COSINE["int8"]
    assert runs["torch"].keys() == runs["onnx"].keys()
    # Same engine for queries and documents: the top document agrees for nearly every query.
    top = [max(r, key=r.get) for r in runs["torch"].values()]
    top_onnx = [max(runs["onnx"][q], key=runs["onnx"][q].get) for q in runs["torch"]]
    agree = sum(a == b for a, b in zip(top, top_onnx, strict=True)) / len(top)
    assert agree >= 0.8, (top, top_onnx)


def test_rerank_stage_scores_with_the_backend(tmp_path: Path, tiny_assets: dict[str, Path]) -> None:
    """The rerank stage on onnx int8 and on openvino fp32 reorders the same candidates as on
    torch: the same documents per query, and nearly every query's top document agrees."""
    runs = {}
    for backend, precision in (("torch", "fp32"), ("onnx", "int8"), ("openvino", "fp32")):
        if backend != "torch":
            _runtime(backend)
        params = tiny_params(
            tiny_assets,
            retrieve={"top_k": 5},
            rerank={"top_k": 5, "backend": backend, "precision": precision},
        )
        ws = StageWorkspace(tmp_path / backend, params, tiny_assets)
        ws.raw()
        ws.model()
        ws.run_all(["encode", "index", "retrieve", "train_reranker", "rerank"])
        runs[backend] = read_trec_run(ws.path("data/runs/rerank.trec"))
    reference = runs.pop("torch")
    for backend, run in runs.items():
        assert run.keys() == reference.keys()
        assert all(run[q].keys() == reference[q].keys() for q in reference), backend
        top = [max(r, key=r.get) for r in reference.values()]
        other = [max(run[q], key=run[q].get) for q in reference]
        agree = sum(a == b for a, b in zip(top, other, strict=True)) / len(top)
        assert agree >= 0.8, (backend, top, other)
