"""The test harness: dvc.yaml read once, params built from the one tiny config, and stage
scripts run in-process exactly as dvc.yaml's command lines call them.

A stage script is imported from ``stages/<name>.py`` and run through
:func:`irtune.stage.run_stage`, so the argument parsing, config loading (scoped to the
stage's declared params: each workspace holds a copy of dvc.yaml), error handling and exit
codes are the real ones. Fixtures over these helpers live in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shlex
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tiny_assets import tiny_config

from irtune.beir import find_file, read_beir, read_corpus
from irtune.config import Config, IndexConfig
from irtune.encode import write_embeddings
from irtune.index import build_index, write_index
from irtune.io import write_jsonl
from irtune.pipeline import DVC_YAML, entry_paths, interpolate, load_stages, stage_outputs
from irtune.runs import write_trec_run
from irtune.stage import run_stage

REPO = Path(__file__).resolve().parents[1]
#: dvc.yaml's stages, in file order.
DVC_STAGES: dict[str, dict[str, Any]] = load_stages(REPO / DVC_YAML)
STAGES = list(DVC_STAGES)
#: The paths of a deps/outs/metrics/plots list; every path a stage declares it writes.
paths, outputs = entry_paths, stage_outputs


def split_cmd(cmd: str) -> tuple[dict[str, str], list[str]]:
    """A dvc.yaml command line as ``(environment assignments, argv)``."""
    argv = shlex.split(cmd)
    env = {}
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    return env, argv


def stage_argv(name: str, params: dict[str, Any]) -> list[str]:
    """dvc.yaml's command line of stage ``name``, resolved, after ``python stages/<name>.py``."""
    _, argv = split_cmd(interpolate(DVC_STAGES[name]["cmd"], params))
    assert argv[:2] == ["python", f"stages/{name}.py"], argv
    return argv[2:]


def declared_outputs(name: str, params: dict[str, Any]) -> list[str]:
    """The outs, metrics and plots paths dvc.yaml declares for stage ``name``, resolved."""
    return [interpolate(p, params) for p in outputs(DVC_STAGES[name])]


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
    """Run stage ``name`` in the current folder with ``argv`` (what follows the script)."""
    module = load_stage(name)
    run_stage(name, module.build_parser(), module.main, argv)


def default_params(**sections: dict[str, Any]) -> dict[str, Any]:
    """The schema defaults as a params.yaml mapping, with per-section overrides."""
    params = asdict(Config())
    for section, values in sections.items():
        params[section].update(values)
    return params


def tiny_params(assets: dict[str, Path], **sections: dict[str, Any]) -> dict[str, Any]:
    """The schema defaults, then the tiny config (``tiny_assets.tiny_config``), then
    ``sections``: params for the whole pipeline on the tiny assets."""
    params = default_params(**tiny_config(assets))
    for section, values in sections.items():
        params[section].update(values)
    return params


def write_params(root: Path, params: dict[str, Any]) -> Path:
    """Write ``params`` as ``root/params.yaml``."""
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


class StageWorkspace:
    """A pipeline workspace without DVC: a folder holding params.yaml and a copy of this
    repository's dvc.yaml, where stages run in-process with dvc.yaml's command lines.

    With the tiny ``assets``, it also builds any stage's inputs where the stage before it
    would have written them (:meth:`raw`, :meth:`model`, :meth:`rows`, :meth:`index`...), so
    one stage can run alone.
    """

    def __init__(self, root: Path, params: dict[str, Any], assets: dict[str, Path] | None = None):
        self.root = root
        self.params = params
        self.assets = assets or {}
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / DVC_YAML, root / DVC_YAML)

    def path(self, rel: str) -> Path:
        """A dvc.yaml path (``data/raw/${dataset.name}``) inside the workspace."""
        return self.root / interpolate(rel, self.params)

    def write_params(self) -> Path:
        return write_params(self.root, self.params)

    # --- a stage's inputs, as the stage before it would have written them ----------------

    @property
    def doc_ids(self) -> list[str]:
        """The tiny corpus' doc ids, in file order."""
        return list(read_corpus(find_file(self.assets["beir"], "corpus.jsonl")))

    def raw(self) -> Path:
        """The tiny dataset where download would have put it."""
        return Path(shutil.copytree(self.assets["beir"], self.path("data/raw/${dataset.name}")))

    def model(self) -> Path:
        """The tiny bi-encoder where train would have put it (32 dimensions)."""
        return Path(shutil.copytree(self.assets["bi_encoder"], self.path("data/model")))

    def rows(self) -> Path:
        """A few MNRL training rows where prepare would have put them."""
        rows = [{"anchor": f"query {i}", "positive": f"document {i}"} for i in range(8)]
        path = self.path("data/prepared/train.jsonl")
        write_jsonl(path, rows)
        return path

    def _unit_vectors(self, dim: int, seed: int) -> np.ndarray:
        emb = np.random.default_rng(seed).normal(size=(len(self.doc_ids), dim))
        return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)

    def embeddings(self, dim: int = 32) -> Path:
        """Random unit vectors for every doc where encode would have put them."""
        out = self.path("data/embeddings")
        write_embeddings(self._unit_vectors(dim, seed=0), self.doc_ids, out)
        return out

    def index(self, dim: int = 32) -> Path:
        """A flat index of random ``dim``-dimensional vectors where index would have put it."""
        out = self.path("data/index")
        vectors = self._unit_vectors(dim, seed=1)
        write_index(build_index(vectors, IndexConfig(type="flat")), self.doc_ids, out)
        return out

    def retrieve_run(self) -> Path:
        """Retrieval runs over the test and the dev queries where retrieve would have put
        them; returns the test run's path."""
        qrels = read_beir(self.assets["beir"], ["test", "dev"]).qrels
        for split, name in (("test", "retrieve.trec"), ("dev", "retrieve_dev.trec")):
            docs = self.doc_ids[:10]
            run = {q: {d: 1.0 / (r + 1) for r, d in enumerate(docs)} for q in qrels[split]}
            write_trec_run(self.path(f"data/runs/{name}"), run, tag="test")
        return self.path("data/runs/retrieve.trec")

    # --- running stages ---------------------------------------------------------------------

    def run(self, name: str, argv: list[str] | None = None) -> None:
        """Run stage ``name`` here on the params.yaml written last, with dvc.yaml's arguments
        (or ``argv``); exits as the stage does (SystemExit 1 on a reported error)."""
        with contextlib.chdir(self.root):
            run_stage_cli(name, stage_argv(name, self.params) if argv is None else argv)

    def link_code(self) -> None:
        """Link this checkout's ``stages/`` and ``src/`` into the workspace, so that
        dvc.yaml's commands run here as DVC runs them (:meth:`shell`)."""
        for name in ("stages", "src"):
            (self.root / name).symlink_to(REPO / name, target_is_directory=True)

    def shell(self, name: str) -> list[str]:
        """dvc.yaml's command of stage ``name``, resolved, as DVC runs it: through a shell,
        in the workspace (after :meth:`link_code`), with ``python`` found on ``PATH``."""
        return ["sh", "-c", interpolate(DVC_STAGES[name]["cmd"], self.params)]

    def run_all(self, stages: list[str] | None = None) -> None:
        """Write params.yaml, then run ``stages`` (default: all, in dvc.yaml's order)."""
        self.write_params()
        for name in stages or STAGES:
            self.run(name)


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
