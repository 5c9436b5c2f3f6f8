"""Compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does.

``dvc exp run`` composes the Hydra config itself; plain ``dvc repro`` reads whatever
``params.yaml`` holds. ``make params`` (this module) closes that gap with DVC's own
composition function, so both paths give byte-identical files.

Usage: ``python -m irtune.compose [OVERRIDE ...]``, e.g. ``loss=cosent train.epochs=3``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from irtune.errors import ConfigError

log = logging.getLogger(__name__)


def compose(overrides: list[str], root: Path = Path("."), output: str = "params.yaml") -> Path:
    """Compose ``root/conf`` with ``overrides`` into ``root/output``; validate it.

    Returns:
        The path written.

    Raises:
        ConfigError: If the composition fails the schema.
    """
    from dvc.utils.hydra import compose_and_dump

    from irtune.config import load_config

    out = root / output
    compose_and_dump(
        out, str((root / "conf").resolve()), None, "config", str(root.resolve()), overrides
    )
    load_config(out)
    return out


def compose_params(overrides: list[str], root: Path = Path(".")) -> dict[str, Any]:
    """The params ``dvc exp run -S <override>...`` composes from ``root/conf``, validated,
    without writing ``params.yaml``.

    Raises:
        ConfigError: Naming the overrides and what is wrong: a bad key or value, or Hydra's
            own complaint (an unknown config group option, bad override syntax).
    """
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = compose(overrides, root=root, output=str(Path(tmp) / "params.yaml"))
        except Exception as exc:  # ConfigError, or Hydra's errors
            raise ConfigError(f"{' '.join(overrides) or '(no overrides)'}: {exc}") from None
        return yaml.safe_load(out.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = sys.argv[1:] if argv is None else argv
    path = compose(overrides)
    log.info("Composed conf/ %s into %s", " ".join(overrides), path)


if __name__ == "__main__":
    main()
