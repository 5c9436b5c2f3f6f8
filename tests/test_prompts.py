"""Base models that expect prompts (E5's "query: " / "passage: ", BGE's query instruction):
the model's own prompts, or the config's, reach training, encoding, retrieval and the
baseline alike; without prompts, nothing changes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from irtune.beir import doc_text, read_beir
from irtune.config import validate
from irtune.dense import encode_queries, exact_search, zero_shot_run
from irtune.encode import encode_corpus
from irtune.models import load_base_model, load_bi_encoder, prompts
from irtune.prepare import build_rows
from irtune.train import column_prompts, train

PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory: pytest.TempPathFactory, tiny_bi_encoder: Path) -> Path:
    """The tiny bi-encoder saved with E5-style prompts in its config."""
    model = load_bi_encoder(str(tiny_bi_encoder))
    model.prompts.update(PROMPTS)
    out = tmp_path_factory.mktemp("prompted") / "model"
    model.save(str(out))
    return out


@pytest.fixture(scope="module")
def dataset(tiny_beir: Path):
    return read_beir(tiny_beir, ["train", "dev", "test"])


def _plain(model, texts: list[str]) -> np.ndarray:
    return model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)


def test_without_prompts_nothing_changes(tiny_bi_encoder: Path, dataset) -> None:
    """A model without prompts encodes queries and documents exactly as plain encode()."""
    model = load_bi_encoder(str(tiny_bi_encoder))
    assert prompts(model) == ("", "")
    texts = [doc_text(d) for d in dataset.corpus.values()]
    assert np.array_equal(encode_corpus(model, dataset.corpus, 16), _plain(model, texts))
    queries = dataset.split_queries("test")
    assert np.array_equal(encode_queries(model, queries, 16), _plain(model, list(queries.values())))
    assert column_prompts(model, ["anchor", "positive"]) is None


def test_a_models_own_prompts_prefix_queries_and_documents(prompted_model: Path, dataset) -> None:
    model = load_bi_encoder(str(prompted_model))
    assert prompts(model) == ("query: ", "passage: ")
    texts = [f"passage: {doc_text(d)}" for d in dataset.corpus.values()]
    np.testing.assert_allclose(encode_corpus(model, dataset.corpus, 16), _plain(model, texts))
    queries = dataset.split_queries("test")
    expected = _plain(model, [f"query: {q}" for q in queries.values()])
    np.testing.assert_allclose(encode_queries(model, queries, 16), expected)
    # And the prompts matter: the plain texts embed differently.
    plain = _plain(model, [doc_text(d) for d in dataset.corpus.values()])
    assert not np.allclose(encode_corpus(model, dataset.corpus, 16), plain)


def test_config_prompts_replace_the_models_own(prompted_model: Path, tmp_path: Path) -> None:
    """model.query_prompt replaces the base model's query prompt; an empty
    model.document_prompt keeps its own; a mining model other than the base is left alone."""
    cfg = validate({"model": {"base": str(prompted_model), "query_prompt": "search_query: "}})
    assert prompts(load_base_model(cfg)) == ("search_query: ", "passage: ")
    miner = shutil.copytree(prompted_model, tmp_path / "miner")
    assert prompts(load_base_model(cfg, str(miner))) == ("query: ", "passage: ")


def test_training_columns_get_query_and_document_prompts(prompted_model: Path) -> None:
    model = load_bi_encoder(str(prompted_model))
    columns = ["anchor", "positive", "negative_1"]
    assert column_prompts(model, columns) == {
        "anchor": "query: ",
        "positive": "passage: ",
        "negative_1": "passage: ",
    }
    assert column_prompts(model, ["sentence1", "sentence2", "score"]) == {
        "sentence1": "query: ",
        "sentence2": "passage: ",
    }


def test_the_trained_model_keeps_the_prompts_it_trained_with(
    tiny_bi_encoder: Path, dataset, tmp_path: Path
) -> None:
    """Prompts set in the config train with the model and are saved in it, so the encode
    and retrieve stages, which load the trained model, use the same ones."""
    cfg = validate(
        {
            "model": {
                "base": str(tiny_bi_encoder),
                "query_prompt": "q: ",
                "document_prompt": "d: ",
            },
            "prepare": {"max_pairs": 16},
            "train": {"batch_size": 8, "max_seq_length": 32, "eval_dev": True},
        }
    )
    result = train(build_rows(dataset, cfg), dataset, cfg, tmp_path / "model", tmp_path / "work")
    assert result.summary["steps"] == 2 and result.dev_curve
    assert prompts(load_bi_encoder(str(tmp_path / "model"))) == ("q: ", "d: ")


def test_the_zero_shot_run_uses_the_prompts(prompted_model: Path, dataset) -> None:
    cfg = validate({"model": {"base": str(prompted_model)}})
    run = zero_shot_run(dataset, cfg)
    model = load_bi_encoder(str(prompted_model))
    expected = exact_search(model, dataset.corpus, dataset.split_queries("test"), 100, 16, 16)
    assert {q: list(d) for q, d in run.items()} == {q: list(d) for q, d in expected.items()}
    unprompted = load_bi_encoder(str(prompted_model))
    unprompted.prompts.update({"query": "", "document": ""})
    plain = exact_search(unprompted, dataset.corpus, dataset.split_queries("test"), 100, 16, 16)
    assert run != plain


def test_rows_are_unprompted_text(prompted_model: Path, dataset) -> None:
    """Training rows hold the plain texts: the trainer adds the prompts, once."""
    cfg = validate({"model": {"base": str(prompted_model)}, "prepare": {"max_pairs": 4}})
    rows = build_rows(dataset, cfg)
    assert rows and not any(r["anchor"].startswith("query: ") for r in rows)
