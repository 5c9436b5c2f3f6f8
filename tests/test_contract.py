"""The contract between conf/, params.yaml, dvc.yaml and the stage scripts.

DVC only knows what dvc.yaml declares: a path a stage reads but does not list in ``deps``
never triggers a rerun, and a path it writes but does not list in ``outs``/``metrics`` is
neither cached nor restored. These tests read dvc.yaml and parse every stage's command
line with the stage's own argument parser, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from irtune.compose import compose

REPO = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
STAGES: dict[str, dict[str, Any]] = DVC_YAML["stages"]
ORDER = [
    "download",
    "prepare",
    "train",
    "encode",
    "index",
    "retrieve",
    "rerank",
    "baseline",
    "evaluate",
]
#: Stage options (argparse dests) that name files or folders the stage writes / reads.
OUTPUT_OPTIONS = {"out", "metrics", "history", "per_query", "record", "significance"}
INPUT_OPTIONS = {
    "data",
    "rows",
    "model",
    "embeddings",
    "index",
    "run",
    "retrieve_run",
    "rerank_run",
    "baseline_run",
    "train_history",
    "retrieve_metrics",
}


@pytest.fixture(scope="module")
def composed_defaults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml as `make params` / `dvc exp run` compose it from conf/ with no overrides."""
    root = tmp_path_factory.mktemp("compose")
    shutil.copytree(REPO / "conf", root / "conf")
    return compose([], root=root)


@pytest.fixture(scope="module")
def params(composed_defaults: Path) -> dict[str, Any]:
    return yaml.safe_load(composed_defaults.read_text(encoding="utf-8"))


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    value: Any = tree
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def _resolve(text: str, params: dict[str, Any]) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup(params, m.group(1).strip())), text)


def _paths(entries: list | None) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def _parser(name: str) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(
        f"irtune_contract_{name}", REPO / "stages" / f"{name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def _parse(name: str, params: dict[str, Any]) -> tuple[list[str], argparse.Namespace]:
    """dvc.yaml's argv for the stage, and what the stage's parser makes of it."""
    argv = shlex.split(_resolve(STAGES[name]["cmd"], params))
    try:
        return argv, _parser(name).parse_args(argv[2:])
    except SystemExit as exc:  # argparse reports bad arguments by exiting
        pytest.fail(f"dvc.yaml's {name} cmd does not parse with stages/{name}.py: exit {exc}")


def _git_show(path: str) -> bytes | None:
    """The committed blob of ``path``, or None if git does not track it."""
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", path], cwd=REPO, capture_output=True, check=False
        )
        if tracked.returncode != 0:
            return None
        return subprocess.run(
            ["git", "show", f"HEAD:{path}"], cwd=REPO, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def test_committed_params_equal_composed_defaults(composed_defaults: Path) -> None:
    """The committed params.yaml is exactly what composing conf/ with no overrides gives."""
    committed = _git_show("params.yaml")
    if committed is None:
        pytest.skip("params.yaml is not committed (git does not track it): nothing to compare")
    assert committed == composed_defaults.read_bytes(), (
        "params.yaml differs from conf/: run `make params` and commit the result"
    )


def test_composition_is_deterministic(composed_defaults: Path, tmp_path: Path) -> None:
    """Composing twice gives byte-identical files (so the committed file can be compared)."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    assert compose([], root=tmp_path).read_bytes() == composed_defaults.read_bytes()


def test_stage_order() -> None:
    """dvc.yaml lists the stages in pipeline order."""
    assert list(STAGES) == ORDER


def test_stage_order_is_topological(params: dict[str, Any]) -> None:
    """Every dep that another stage produces comes from a stage listed earlier."""
    producer = {
        _resolve(path, params): name
        for name, stage in STAGES.items()
        for path in _paths(stage.get("outs")) + _paths(stage.get("metrics"))
    }
    position = {name: i for i, name in enumerate(STAGES)}
    for name, stage in STAGES.items():
        for dep in _paths(stage.get("deps")):
            made_by = producer.get(_resolve(dep, params))
            if made_by is not None:
                assert position[made_by] < position[name], f"{name} needs {dep} from {made_by}"


@pytest.mark.parametrize("name", list(STAGES))
def test_cmd_runs_its_script(name: str) -> None:
    """Each cmd is `python stages/<name>.py ...`, and the script is one of its deps."""
    argv = shlex.split(STAGES[name]["cmd"])
    assert argv[:2] == ["python", f"stages/{name}.py"]
    assert (REPO / "stages" / f"{name}.py").is_file()
    assert f"stages/{name}.py" in _paths(STAGES[name].get("deps"))


@pytest.mark.parametrize("name", list(STAGES))
def test_cmd_parses_and_paths_are_declared(name: str, params: dict[str, Any]) -> None:
    """The cmd parses with the stage's build_parser(); every path it writes is in outs or
    metrics, and every path it reads is in deps."""
    _, args = _parse(name, params)
    stage = STAGES[name]
    outs = {_resolve(p, params) for p in _paths(stage.get("outs")) + _paths(stage.get("metrics"))}
    deps = {_resolve(p, params) for p in _paths(stage.get("deps"))}
    given = {dest: value for dest, value in vars(args).items() if dest != "params"}
    for dest, value in given.items():
        if value is None:
            continue
        if dest in OUTPUT_OPTIONS:
            assert str(value) in outs, f"{name}: --{dest} {value} is not in outs/metrics"
        elif dest in INPUT_OPTIONS:
            assert str(value) in deps, f"{name}: --{dest} {value} is not in deps"


@pytest.mark.parametrize("name", list(STAGES))
def test_every_path_option_is_classified(name: str) -> None:
    """Each path option a stage takes is known here as an input or an output, so a new one
    cannot slip past the check above."""
    parser = _parser(name)
    path_dests = {
        a.dest for a in parser._actions if a.type is Path and a.dest not in ("params", "help")
    }
    unknown = path_dests - OUTPUT_OPTIONS - INPUT_OPTIONS
    assert not unknown, f"stages/{name}.py has unclassified path options: {unknown}"


@pytest.mark.parametrize("name", list(STAGES))
def test_declared_outputs_are_written_by_the_cmd(name: str, params: dict[str, Any]) -> None:
    """Conversely, every declared out/metrics path is one the cmd passes to an output option
    (a declared output nobody writes would fail `dvc repro`)."""
    _, args = _parse(name, params)
    written = {str(v) for d, v in vars(args).items() if d in OUTPUT_OPTIONS and v is not None}
    stage = STAGES[name]
    for path in _paths(stage.get("outs")) + _paths(stage.get("metrics")):
        assert _resolve(path, params) in written, f"{name} declares {path} but never writes it"


@pytest.mark.parametrize("name", list(STAGES))
def test_listed_params_exist(name: str, params: dict[str, Any]) -> None:
    """Every params key a stage lists exists in params.yaml (a typo would track nothing)."""
    for entry in STAGES[name].get("params", []):
        if isinstance(entry, dict):  # {file: keys}; `params.yaml:` with no keys = all of it
            for file, keys in entry.items():
                assert file == "params.yaml"
                for key in keys or []:
                    _lookup(params, key)
        else:
            try:
                _lookup(params, entry)
            except KeyError:
                pytest.fail(f"{name} lists param '{entry}', which params.yaml does not have")


@pytest.mark.parametrize("name", list(STAGES))
def test_deps_exist_or_are_produced(name: str, params: dict[str, Any]) -> None:
    """Every dep is a file in the repository or the output of another stage."""
    produced = {
        _resolve(p, params)
        for stage in STAGES.values()
        for p in _paths(stage.get("outs")) + _paths(stage.get("metrics"))
    }
    for dep in _paths(STAGES[name].get("deps")):
        path = _resolve(dep, params)
        assert path in produced or (REPO / path).exists(), f"{name}: dep {dep} does not exist"
