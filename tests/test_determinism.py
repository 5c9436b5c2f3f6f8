"""Same params, same seed, same results: the whole pipeline run twice gives identical files.

Every stage runs in-process through its dvc.yaml command line (download, prepare, train for
one epoch on the tiny bi-encoder, encode, index, retrieve, rerank with the tiny
cross-encoder, baseline, evaluate), with tracking off, in two fresh workspaces.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from harness import STAGES, StageWorkspace, tiny_params
from safetensors.torch import load_file


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file in a saved model, keyed by file and name."""
    files = sorted(model_dir.rglob("*.safetensors"))
    assert files, f"no weights saved in {model_dir}"
    return {
        f"{f.relative_to(model_dir)}:{name}": tensor
        for f in files
        for name, tensor in load_file(f).items()
    }


@pytest.fixture(scope="module")
def two_runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_assets: dict[str, Path]
) -> tuple[Path, Path]:
    """The pipeline run twice, with the same params, in two fresh workspaces."""
    assert STAGES[0] == "download" and STAGES[-1] == "evaluate", STAGES
    params = tiny_params(tiny_assets, train={"epochs": 1, "seed": 42}, tracking={"enabled": False})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DVC_ROOT", raising=False)  # each workspace is its own repository root
        roots = []
        for name in ("first", "second"):
            root = tmp_path_factory.mktemp(name)
            StageWorkspace(root, params).run_all()
            roots.append(root)
    return roots[0], roots[1]


def test_metrics_are_byte_identical(two_runs: tuple[Path, Path]) -> None:
    """Every metrics/*.json file (download ... evaluate), every plot's data and every TREC run
    is byte-identical between the two runs."""
    first, second = two_runs
    names = sorted(
        p.relative_to(first).as_posix()
        for pattern in ("metrics/*.json", "plots/*.json")
        for p in first.glob(pattern)
    )
    assert len(names) >= 9, f"too few metrics and plots files: {names}"
    assert names == sorted(
        p.relative_to(second).as_posix()
        for pattern in ("metrics/*.json", "plots/*.json")
        for p in second.glob(pattern)
    )
    runs = sorted(p.relative_to(first).as_posix() for p in first.glob("data/runs/*.trec"))
    assert len(runs) == 4, runs  # retrieve, its dev run, rerank, baseline
    differ = [n for n in names + runs if (first / n).read_bytes() != (second / n).read_bytes()]
    assert not differ, f"these files differ between two runs with the same seed: {differ}"


def test_trained_weights_are_identical(two_runs: tuple[Path, Path], tiny_bi_encoder: Path) -> None:
    """The trained model's tensors are identical between the two runs, and training did move
    them away from the base model (so the equality is not the trivial one)."""
    first, second = (_weights(root / "data" / "model") for root in two_runs)
    assert first.keys() == second.keys()
    differ = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differ, f"tensors differ between two runs with the same seed: {differ}"

    base = _weights(tiny_bi_encoder)
    shared = first.keys() & base.keys()
    assert shared, f"no tensor names in common with the base model: {sorted(first)[:5]}"
    assert any(not torch.equal(first[k], base[k]) for k in shared), "training changed nothing"
