"""IRTUNE_MIRROR: hub ids served from local copies, so the params (and ``dvc.lock``) of a
run made offline are those of a run made online."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
from harness import StageWorkspace, tiny_params

from irtune import mirror
from irtune.errors import ConfigError
from irtune.models import load_bi_encoder, load_cross_encoder


@pytest.fixture
def hub(tmp_path: Path, tiny_assets: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A mirror holding the tiny dataset as ``BeIR/tiny`` and the tiny models as
    ``tiny-org/bi`` and ``tiny-org/cross``, by links, as `make mirror` makes it."""
    root = tmp_path / "mirror"
    for hub_id, asset in (
        ("BeIR/tiny", "beir"),
        ("tiny-org/bi", "bi_encoder"),
        ("tiny-org/cross", "cross_encoder"),
    ):
        (root / hub_id).parent.mkdir(parents=True, exist_ok=True)
        (root / hub_id).symlink_to(tiny_assets[asset], target_is_directory=True)
    monkeypatch.setenv(mirror.ENV, str(root))
    return root


def test_only_hub_ids_with_a_copy_are_resolved(hub: Path, tmp_path: Path) -> None:
    assert mirror.resolve("BeIR/tiny") == str(hub / "BeIR" / "tiny")
    for untouched in ("BeIR/nfcorpus", "https://example.org/BeIR/tiny", str(tmp_path), "./x/y"):
        assert mirror.resolve(untouched) == untouched


def test_without_the_variable_nothing_is_resolved(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(mirror.ENV)
    assert mirror.resolve("BeIR/tiny") == "BeIR/tiny"


def test_models_load_from_their_copy(hub: Path) -> None:
    assert load_bi_encoder("tiny-org/bi").get_embedding_dimension() == 32
    assert load_cross_encoder("tiny-org/cross", 128) is not None
    with pytest.raises(ConfigError, match="tiny-org/missing"):
        load_bi_encoder("tiny-org/missing")  # not mirrored, and no hub to ask


def test_a_mirrored_dataset_downloads_as_its_local_copy(
    hub: Path, tmp_path: Path, tiny_assets: dict[str, Path]
) -> None:
    """The download stage given the hub id writes what it writes given the local folder, and
    the params keep the hub id."""
    by_id = StageWorkspace(
        tmp_path / "by-id", tiny_params(tiny_assets, dataset={"source": "BeIR/tiny"})
    )
    by_path = StageWorkspace(tmp_path / "by-path", tiny_params(tiny_assets))
    for ws in (by_id, by_path):
        ws.write_params()
        ws.run("download")
    raw = "data/raw/${dataset.name}"
    same = filecmp.dircmp(by_id.path(raw), by_path.path(raw))
    assert not (same.diff_files or same.left_only or same.right_only)
    assert by_id.path("metrics/download.json").read_text() == (
        by_path.path("metrics/download.json").read_text()
    )
    assert "source: BeIR/tiny" in (by_id.root / "params.yaml").read_text()
