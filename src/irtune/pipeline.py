"""What irtune knows of the DVC project it runs in: its root, and what ``dvc.yaml`` declares.

``dvc.yaml`` is the one place paths are written and each stage's params are listed. The
stages read it once, at start-up, for the params they may read (:func:`stage_config`); the
tools that need a stage's output path (``make compare``) read it here too.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any

from irtune.config import Config, ScopedConfig
from irtune.errors import ConfigError

log = logging.getLogger(__name__)

DVC_YAML = "dvc.yaml"


def repo_root() -> Path:
    """The repository the pipeline belongs to.

    Queued experiments run in a temporary copy of the repository; DVC points ``DVC_ROOT`` at
    the original one, so their runs land in the same store as workspace runs.
    """
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def load_stages(dvc_yaml: Path) -> dict[str, dict[str, Any]]:
    """The stages ``dvc_yaml`` defines, by name, in file order.

    Raises:
        ConfigError: If the file is not a YAML mapping with a ``stages`` mapping.
    """
    import yaml

    try:
        raw = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{dvc_yaml}: not valid YAML: {exc}") from None
    stages = raw.get("stages") if isinstance(raw, dict) else None
    if not isinstance(stages, dict):
        raise ConfigError(f"{dvc_yaml}: no 'stages' mapping")
    return stages


def declared_params(stage: dict[str, Any]) -> list[str] | None:
    """The params a ``dvc.yaml`` stage lists (sections or dotted keys) from ``params.yaml``;
    None when it depends on the whole file (``- params.yaml:`` with no keys)."""
    keys: list[str] = []
    for entry in stage.get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
            continue
        for file, listed in entry.items():
            if file == "params.yaml":
                if not listed:
                    return None
                keys += listed
    return keys


def entry_paths(entries: list | None) -> list[str]:
    """The paths of a ``dvc.yaml`` deps/outs/metrics/plots list, whose entries are a path or
    a one-key mapping of a path to its options (``{"metrics/eval.json": {"cache": False}}``)."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def stage_outputs(stage: dict[str, Any]) -> list[str]:
    """Every path a ``dvc.yaml`` stage declares it writes: its outs, metrics and plots, as
    written there (``${...}`` unresolved)."""
    return [p for key in ("outs", "metrics", "plots") for p in entry_paths(stage.get(key))]


def stage_config(cfg: Config, stage: str, dvc_yaml: Path) -> Config | ScopedConfig:
    """The config stage ``stage`` may read: scoped to the params ``dvc_yaml`` lists for it.

    Without a ``dvc_yaml`` (a stage script run by hand outside a DVC project) or a stage it
    defines, the whole config.
    """
    if not dvc_yaml.is_file():
        log.debug("No %s: stage %s reads the whole config", dvc_yaml, stage)
        return cfg
    spec = load_stages(dvc_yaml).get(stage)
    if spec is None:
        log.warning("%s defines no stage '%s': its params reads are not checked", dvc_yaml, stage)
        return cfg
    keys = declared_params(spec)
    return cfg if keys is None else ScopedConfig(cfg, keys, stage)


def lookup(params: dict[str, Any], dotted: str) -> Any:
    """``params["a"]["b"]`` for ``"a.b"``.

    Raises:
        KeyError: Naming the whole dotted key, if any part of it is missing.
    """
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def interpolate(text: str, params: dict[str, Any]) -> str:
    """``text`` with DVC's ``${a.b}`` references replaced by their values in ``params``."""
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(lookup(params, m.group(1).strip())), text)


def stage_option(dvc_yaml: Path, stage: str, option: str) -> str:
    """The value the ``dvc_yaml`` command of ``stage`` passes to ``option`` (e.g. an output
    path), as written there (``${...}`` unresolved).

    Raises:
        ConfigError: If there is no such stage or the command does not pass the option.
    """
    argv = shlex.split(load_stages(dvc_yaml).get(stage, {}).get("cmd", ""))
    if option not in argv[:-1]:
        raise ConfigError(f"{dvc_yaml}: the {stage} stage does not pass {option}")
    return argv[argv.index(option) + 1]
