"""Shared pytest setup: offline Hugging Face settings and session-wide tiny assets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Set before anything imports transformers / datasets, which read these at import time.
# setdefault so a developer can still override them from the shell.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    # Fast tokenizers warn (and can deadlock) when used before a fork, e.g. DataLoader workers.
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

# tests/ is not a package; make `from tiny_assets import ...` work in any import mode.
sys.path.insert(0, str(Path(__file__).parent))

from tiny_assets import build_all  # noqa: E402


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the tiny dataset and models once per test session."""
    return build_all(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_beir(tiny_assets: dict[str, Path]) -> Path:
    """BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``."""
    return tiny_assets["beir"]


@pytest.fixture(scope="session")
def tiny_bi_encoder(tiny_assets: dict[str, Path]) -> Path:
    """Saved random-init SentenceTransformer (32-dim, normalized embeddings)."""
    return tiny_assets["bi_encoder"]


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_assets: dict[str, Path]) -> Path:
    """Saved random-init single-logit CrossEncoder."""
    return tiny_assets["cross_encoder"]
