"""The contract between conf/, params.yaml, dvc.yaml, the stage scripts and the library.

DVC only knows what dvc.yaml declares: a file a stage runs or reads but does not list in
``deps`` never triggers a rerun, a param it reads but does not list never does either, and a
path it writes but does not list in ``outs``/``metrics`` is neither cached nor restored.
These tests read dvc.yaml, parse every stage's command line with the stage's own argument
parser, and compute from the code itself which library files each stage runs, so none of
it can drift apart.
"""

from __future__ import annotations

import argparse
import ast
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import (
    DVC_STAGES,
    REPO,
    StageWorkspace,
    load_stage,
    outputs,
    paths,
    split_cmd,
    tiny_params,
)

from irtune.compose import compose
from irtune.config import ScopedConfig, flatten, validate
from irtune.errors import ConfigError
from irtune.pipeline import interpolate, lookup
from irtune.workspace import clean_env, copy_checkout, run_captured

SRC = REPO / "src"
ORDER = [
    "download",
    "prepare",
    "train",
    "encode",
    "index",
    "retrieve",
    "train_reranker",
    "rerank",
    "baseline",
    "evaluate",
]
#: Stage options (argparse dests) that name files or folders the stage writes / reads.
OUTPUT_OPTIONS = {
    "out",
    "dev_out",
    "metrics",
    "history",
    "per_query",
    "record",
    "significance",
    "loss_plot",
    "dev_plot",
    "delta_plot",
}
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
    "rerank_metrics",
    "download_metrics",
    "dev_run",
    "reranker",
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


def _parse(name: str, params: dict[str, Any]) -> argparse.Namespace:
    """What the stage's own parser makes of dvc.yaml's command line."""
    _, argv = split_cmd(interpolate(DVC_STAGES[name]["cmd"], params))
    try:
        return load_stage(name).build_parser().parse_args(argv[2:])
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


# --- the library's import graph, from the code --------------------------------------------


def _module_file(module: str) -> Path | None:
    """The file under src/ that defines ``module`` (``irtune.x`` or ``irtune.x.y``)."""
    base = SRC.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_files(path: Path) -> set[Path]:
    """The src/irtune files ``path`` imports, anywhere in it (a function's imports too: they
    run when it does), with each package's ``__init__.py`` that the import runs."""
    package = path.relative_to(SRC).parent.parts if path.is_relative_to(SRC) else ()
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing file's package
                parts = package[: len(package) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            names |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    files = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "irtune":
            continue
        for depth in range(1, len(parts) + 1):  # irtune, irtune.sweep, irtune.sweep.report
            found = _module_file(".".join(parts[:depth]))
            if found is not None:
                files.add(found)
    return files


def _runs(script: Path) -> dict[Path, Path]:
    """Every src/irtune file ``script`` runs, transitively, each with a file importing it."""
    found: dict[Path, Path] = {}
    todo = [script]
    while todo:
        current = todo.pop()
        for imported in sorted(_imported_files(current) - found.keys()):
            found[imported] = current
            todo.append(imported)
    return found


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# --- conf/ and params.yaml ----------------------------------------------------------------


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


# --- dvc.yaml: stages, commands, paths ----------------------------------------------------


def test_stage_order() -> None:
    """dvc.yaml lists the stages in pipeline order."""
    assert list(DVC_STAGES) == ORDER


def test_stage_order_is_topological(params: dict[str, Any]) -> None:
    """Every dep that another stage produces comes from a stage listed earlier."""
    producer = {
        interpolate(path, params): name
        for name, stage in DVC_STAGES.items()
        for path in outputs(stage)
    }
    position = {name: i for i, name in enumerate(DVC_STAGES)}
    for name, stage in DVC_STAGES.items():
        for dep in paths(stage.get("deps")):
            made_by = producer.get(interpolate(dep, params))
            if made_by is not None:
                assert position[made_by] < position[name], f"{name} needs {dep} from {made_by}"


@pytest.mark.parametrize("name", ORDER)
def test_cmd_runs_its_script_on_the_repositorys_library(name: str) -> None:
    """Each cmd is `PYTHONPATH=src python stages/<name>.py ...`, and the script is a dep."""
    env, argv = split_cmd(DVC_STAGES[name]["cmd"])
    assert env == {"PYTHONPATH": "src"}, f"{name}: the cmd must set PYTHONPATH=src, got {env}"
    assert argv[:2] == ["python", f"stages/{name}.py"]
    assert (REPO / "stages" / f"{name}.py").is_file()
    assert f"stages/{name}.py" in paths(DVC_STAGES[name].get("deps"))


@pytest.mark.parametrize("name", ORDER)
def test_cmd_parses_and_paths_are_declared(name: str, params: dict[str, Any]) -> None:
    """The cmd parses with the stage's build_parser(); every path it writes is in outs or
    metrics, and every path it reads is in deps."""
    args = _parse(name, params)
    stage = DVC_STAGES[name]
    outs = {interpolate(p, params) for p in outputs(stage)}
    deps = {interpolate(p, params) for p in paths(stage.get("deps"))}
    for dest, value in vars(args).items():
        if value is None or dest == "params":
            continue
        if dest in OUTPUT_OPTIONS:
            assert str(value) in outs, f"{name}: --{dest} {value} is not in outs/metrics/plots"
        elif dest in INPUT_OPTIONS:
            assert str(value) in deps, f"{name}: --{dest} {value} is not in deps"


@pytest.mark.parametrize("name", ORDER)
def test_every_path_option_is_classified(name: str) -> None:
    """Each path option a stage takes is known here as an input or an output, so a new one
    cannot slip past the check above."""
    parser = load_stage(name).build_parser()
    path_dests = {
        a.dest for a in parser._actions if a.type is Path and a.dest not in ("params", "help")
    }
    unknown = path_dests - OUTPUT_OPTIONS - INPUT_OPTIONS
    assert not unknown, f"stages/{name}.py has unclassified path options: {unknown}"


@pytest.mark.parametrize("name", ORDER)
def test_declared_outputs_are_written_by_the_cmd(name: str, params: dict[str, Any]) -> None:
    """Conversely, every declared out/metrics path is one the cmd passes to an output option
    (a declared output nobody writes would fail `dvc repro`)."""
    args = _parse(name, params)
    written = {str(v) for d, v in vars(args).items() if d in OUTPUT_OPTIONS and v is not None}
    stage = DVC_STAGES[name]
    for path in outputs(stage):
        assert interpolate(path, params) in written, f"{name} declares {path} but never writes it"


@pytest.mark.parametrize("name", ORDER)
def test_listed_params_exist(name: str, params: dict[str, Any]) -> None:
    """Every params key a stage lists exists in params.yaml (a typo would track nothing)."""
    for entry in DVC_STAGES[name].get("params", []):
        if isinstance(entry, dict):  # {file: keys}; `params.yaml:` with no keys = all of it
            for file, keys in entry.items():
                assert file == "params.yaml"
                for key in keys or []:
                    lookup(params, key)
        else:
            try:
                lookup(params, entry)
            except KeyError:
                pytest.fail(f"{name} lists param '{entry}', which params.yaml does not have")


@pytest.mark.parametrize("name", ORDER)
def test_deps_exist_or_are_produced(name: str, params: dict[str, Any]) -> None:
    """Every dep is a file in the repository or the output of another stage."""
    produced = {interpolate(p, params) for stage in DVC_STAGES.values() for p in outputs(stage)}
    for dep in paths(DVC_STAGES[name].get("deps")):
        path = interpolate(dep, params)
        assert path in produced or (REPO / path).exists(), f"{name}: dep {dep} does not exist"


# --- every file a stage runs is a dep ------------------------------------------------------


@pytest.mark.parametrize("name", ORDER)
def test_deps_list_every_library_file_the_stage_runs(name: str) -> None:
    """The src/irtune files a stage script imports, directly or through other modules, are
    exactly the src/ files its deps list: a missing one would leave stale outputs when that
    file changes, an extra one would rerun the stage for nothing."""
    runs = _runs(REPO / "stages" / f"{name}.py")
    listed = {d for d in paths(DVC_STAGES[name].get("deps")) if d.startswith("src/")}
    missing = sorted(_rel(f) for f in runs if _rel(f) not in listed)
    assert not missing, f"dvc.yaml: stage '{name}' runs files its deps do not list: " + ", ".join(
        f"{m} (imported by {_rel(runs[REPO / m])})" for m in missing
    )
    extra = sorted(listed - {_rel(f) for f in runs})
    assert not extra, f"dvc.yaml: stage '{name}' lists deps it never imports: {extra}"


def test_the_import_scan_sees_lazy_and_package_imports() -> None:
    """The scan above follows imports inside functions and into subpackages (so it cannot
    pass by seeing too little): the evaluate stage reaches tracking, which imports mlflow's
    client inside a function, and the sweep CLI reaches the sweep package's modules."""
    evaluate = {_rel(f) for f in _runs(REPO / "stages" / "evaluate.py")}
    assert {"src/irtune/tracking.py", "src/irtune/pipeline.py", "src/irtune/__init__.py"} <= (
        evaluate
    )
    sweep = {_rel(f) for f in _runs(SRC / "irtune" / "sweep" / "__main__.py")}
    assert {"src/irtune/sweep/__init__.py", "src/irtune/sweep/report.py"} <= sweep
    assert "src/irtune/compose.py" in sweep  # imported inside functions only


def test_the_library_has_no_import_cycle() -> None:
    """No src/irtune module imports itself back, however indirectly (lazy imports count)."""
    modules = sorted(SRC.rglob("*.py"))
    graph = {m: sorted(_imported_files(m) - {m}) for m in modules}
    state: dict[Path, str] = {}
    stack: list[Path] = []

    def visit(node: Path) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, []):
            # A package's __init__ runs before its modules: module -> own __init__ is no cycle.
            if nxt.name == "__init__.py" and node.is_relative_to(nxt.parent):
                continue
            if state.get(nxt) == "open":
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(_rel(p) for p in cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in modules:
        if module not in state:
            visit(module)


def test_no_stage_imports_a_stage_and_the_library_imports_none() -> None:
    """Stages share code through the library only; the library never reaches into stages/."""
    for path in [*(REPO / "stages").glob("*.py"), *SRC.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0] in ("stages", *ORDER)]
            assert not bad, f"{_rel(path)}:{node.lineno} imports {bad}"


def test_a_stage_runs_the_library_of_the_repository_it_runs_in(
    tmp_path: Path, tiny_assets: dict[str, Path]
) -> None:
    """dvc.yaml's command, run as DVC runs it in a copy of this repository (a queued
    experiment's temporary copy, a CI clone), imports the copy's irtune, not the checkout the
    environment's editable install points at."""
    copy = tmp_path / "copy"
    copy_checkout(REPO, copy)
    ws = StageWorkspace(copy, tiny_params(tiny_assets))
    ws.write_params()
    env = clean_env(Path(sys.executable).parent)
    env.pop("PYTHONPATH", None)
    result = run_captured(ws.shell("download"), cwd=copy, env=env, timeout=300)
    assert result.returncode == 0, result.output[-3000:]
    where = (copy / "src" / "irtune").resolve()
    assert f"download: irtune 0.1.0 from {where}\n" in result.output, result.output[-3000:]
    assert (copy / "data" / "raw" / "tiny" / "corpus.jsonl").is_file()


# --- every param a stage reads is listed ---------------------------------------------------


def test_a_scoped_config_refuses_unlisted_keys() -> None:
    """A stage's config lets it read the sections and keys dvc.yaml lists, and names any
    other key it reads; properties and flatten() see only what is allowed."""
    cfg = ScopedConfig(
        validate({"retrieve": {"prf_ks": [0, 2]}}), ["retrieve", "dataset.test_split"], "retrieve"
    )
    assert cfg.retrieve.top_k == 100 and cfg.dataset.test_split == "test"
    assert cfg.retrieve.prf is True  # a property reading allowed fields
    with pytest.raises(ConfigError, match=r"stage 'retrieve' reads param 'dataset\.dev_split'"):
        _ = cfg.dataset.dev_split
    with pytest.raises(ConfigError, match=r"'train\.lr'"):
        _ = cfg.train.lr
    with pytest.raises(AttributeError):
        cfg.retrieve.top_k = 5
    assert set(flatten(cfg)) == {f"retrieve.{k}" for k in vars(cfg._cfg.retrieve)} | {
        "dataset.test_split"
    }


#: Stage runs whose code paths read params the default recipe does not: each must find
#: every param it reads among its stage's declared ones.
VARIANTS = {
    "prepare-mined-negatives": (
        "prepare",
        {"prepare": {"negatives": "mined", "mine_relative_margin": 0.0}},
    ),
    "prepare-mined-with-prompts": (
        "prepare",
        {
            "model": {"query_prompt": "query: ", "document_prompt": "passage: "},
            "prepare": {"negatives": "mined", "mine_relative_margin": 0.0},
        },
    ),
    "prepare-cross-encoder-labels": (
        "prepare",
        {"loss": {"name": "cosent"}, "prepare": {"negatives": "random", "labels": "cross_encoder"}},
    ),
    "train-gist-with-checkpoints": (
        "train",
        {"loss": {"name": "gist"}, "train": {"checkpoint_steps": 2, "eval_dev": True}},
    ),
    "retrieve-hybrid-feedback": (
        "retrieve",
        {"retrieve": {"mode": "hybrid", "prf_ks": [0, 2], "prf_betas": [0.5]}},
    ),
    "retrieve-rrf": ("retrieve", {"retrieve": {"mode": "hybrid", "fusion": "rrf"}}),
    "encode-onnx": ("encode", {"encode": {"backend": "onnx", "precision": "int8"}}),
    "index-ivf": ("index", {"index": {"type": "ivf"}}),
    "baseline-off": ("baseline", {"evaluate": {"baseline": False}}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stage_variants_read_only_declared_params(
    tmp_path: Path, tiny_assets: dict[str, Path], variant: str
) -> None:
    """The stage, in this variant of the recipe, runs to the end under its scoped config."""
    stage, sections = VARIANTS[variant]
    ws = StageWorkspace(tmp_path / "ws", tiny_params(tiny_assets, **sections), tiny_assets)
    ws.raw()
    ws.model()
    ws.rows()
    ws.embeddings()
    ws.index()
    ws.write_params()
    ws.run(stage)


def test_a_stage_reading_an_unlisted_param_fails_naming_it(
    tmp_path: Path, tiny_assets: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The real index stage, with `index` struck from its params in the workspace's
    dvc.yaml, stops at its first read of an index param, naming the stage and the key."""
    ws = StageWorkspace(tmp_path / "ws", tiny_params(tiny_assets), tiny_assets)
    spec = yaml.safe_load((ws.root / "dvc.yaml").read_text(encoding="utf-8"))
    spec["stages"]["index"]["params"] = []
    (ws.root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    ws.write_params()
    ws.embeddings()
    caplog.clear()
    with pytest.raises(SystemExit) as exit_info:
        ws.run("index")
    assert exit_info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "index failed: stage 'index' reads param 'index.type', which dvc.yaml does not list "
        "in its params: DVC would not rerun the stage when it changes"
    ]
    assert not ws.path("data/index").exists()
