"""`python -m irtune.compare`: where it finds per-query metrics. The comparison itself runs
between two real DVC experiments in the end-to-end test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from irtune.compare import per_query_path
from irtune.errors import IrtuneError

REPO = Path(__file__).resolve().parents[1]


def test_per_query_path_is_an_output_of_the_evaluate_stage() -> None:
    """The path comes from dvc.yaml, the one place paths are written, and DVC tracks it."""
    path = per_query_path(REPO)
    outs = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["evaluate"]
    assert path in outs["outs"], (path, outs["outs"])


def test_a_dvc_yaml_without_per_query_output_is_named(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: python stages/evaluate.py --out m.json\n", encoding="utf-8"
    )
    with pytest.raises(IrtuneError, match=r"dvc\.yaml.*--per-query"):
        per_query_path(tmp_path)
