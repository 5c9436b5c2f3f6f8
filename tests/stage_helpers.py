"""Run stage scripts in-process exactly as dvc.yaml's command lines call them.

Shared by the stage-level tests (bad inputs, determinism, tracking). A stage script is
imported from ``stages/<name>.py`` and run through :func:`irtune.stage.run_stage`, so the
argument parsing, config loading, error handling and exit codes are the real ones.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from irtune.config import Config
from irtune.stage import run_stage

REPO = Path(__file__).resolve().parents[1]
#: dvc.yaml's stages, in file order.
DVC_STAGES: dict[str, dict] = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))[
    "stages"
]
STAGES = list(DVC_STAGES)


def load_stage(name: str):
    """Import stages/<name>.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location(
        f"irtune_stage_{name}", REPO / "stages" / f"{name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_stage_cli(name: str, argv: list[str]) -> None:
    """Run stage ``name`` with ``argv`` (the arguments after ``python stages/<name>.py``)."""
    module = load_stage(name)
    run_stage(name, module.build_parser(), module.main, argv)


def lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value[part]
    return value


def resolve(text: str, params: dict[str, Any]) -> str:
    """Interpolate DVC's ``${a.b}`` from params."""
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(lookup(params, m.group(1).strip())), text)


def default_params(**overrides: dict[str, Any]) -> dict[str, Any]:
    """The schema defaults as a params.yaml mapping, with per-section overrides."""
    params = asdict(Config())
    for section, values in overrides.items():
        params[section].update(values)
    return params


def tiny_params(
    tiny_beir: Path, tiny_bi_encoder: Path, tiny_cross_encoder: Path, **overrides: dict[str, Any]
) -> dict[str, Any]:
    """Params for the whole pipeline on the tiny assets (as tests/test_stages.py uses)."""
    sections: dict[str, dict[str, Any]] = {
        "dataset": {"name": "tiny", "source": str(tiny_beir)},
        "model": {"base": str(tiny_bi_encoder)},
        "train": {"max_seq_length": 64, "batch_size": 8, "logging_steps": 2},
        "encode": {"batch_size": 32},
        "retrieve": {"top_k": 20},
        "rerank": {"model": str(tiny_cross_encoder), "max_length": 128, "batch_size": 16},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return default_params(**sections)


def write_params(root: Path, params: dict[str, Any]) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def stage_argv(name: str, params: dict[str, Any]) -> list[str]:
    """dvc.yaml's command line of stage ``name``, resolved, without ``python stages/x.py``."""
    argv = shlex.split(resolve(DVC_STAGES[name]["cmd"], params))
    assert argv[:2] == ["python", f"stages/{name}.py"], argv
    return argv[2:]


def declared_outputs(name: str, params: dict[str, Any]) -> list[str]:
    """The outs and metrics paths dvc.yaml declares for stage ``name``, resolved."""
    stage = DVC_STAGES[name]
    entries = [*stage.get("outs", []), *stage.get("metrics", [])]
    return [resolve(next(iter(e)) if isinstance(e, dict) else e, params) for e in entries]


def run_pipeline(root: Path, params: dict[str, Any], stages: list[str] | None = None) -> None:
    """Write params.yaml into ``root`` and run ``stages`` (default: all) there, in order."""
    write_params(root, params)
    with contextlib.chdir(root):
        for name in stages or STAGES:
            run_stage_cli(name, stage_argv(name, params))


def lines(path: Path) -> list[str]:
    """The lines of a text file."""
    return path.read_text(encoding="utf-8").splitlines()


def set_line(path: Path, lineno: int, text: str) -> None:
    """Replace line ``lineno`` (1-based) of ``path`` with ``text``."""
    content = lines(path)
    content[lineno - 1] = text
    path.write_text("\n".join(content) + "\n", encoding="utf-8")


def append_line(path: Path, text: str) -> int:
    """Append ``text`` as a new line of ``path``; return its line number."""
    content = [*lines(path), text]
    path.write_text("\n".join(content) + "\n", encoding="utf-8")
    return len(content)
