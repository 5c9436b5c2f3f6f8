"""A named sweep: ``conf/sweep/<name>.yaml``, read and expanded into its members.

A sweep file is a ``conf/sweep`` config group option. What it sets (a data subset, the
MLflow experiment, ``sweep.name``...) is fixed for every member; its axes are Hydra sweep
overrides under ``hydra.sweeper.params``, as in lightning-hydra-template's hparams_search
configs. Hydra drops the ``hydra`` node when DVC composes ``params.yaml``, so the axes never
reach a member's params: :func:`load_sweep` reads them, and :func:`members` expands them as
``dvc exp run --queue -S`` will.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from irtune.config import Config
from irtune.errors import ConfigError

SWEEP_DIR = Path("conf") / "sweep"
#: Axes whose values are seeds: members that differ only in these are replicates of one
#: recipe (``sweep.seeds`` adds the first; a sweep file may sweep either).
SEED_AXES = ("train.seed", "prepare.seed")


@dataclass
class Sweep:
    """A sweep file, read."""

    name: str
    path: Path
    #: Hydra sweep override per key, in file order, e.g. ``{"loss": "mnrl,cosent"}``.
    axes: dict[str, str]

    @property
    def recipe_axes(self) -> list[str]:
        """The axes that make a recipe: every axis but the seeds."""
        return [axis for axis in self.axes if axis not in SEED_AXES]

    def with_seeds(self, seeds: list[int]) -> Sweep:
        """This sweep with every member repeated for each of ``seeds`` (``sweep.seeds``): the
        axis ``train.seed``, swept like any other, so one ``dvc exp run --queue`` still
        queues the whole product.

        Raises:
            ConfigError: If the sweep file sweeps ``train.seed`` itself.
        """
        if not seeds:
            return self
        if "train.seed" in self.axes:
            raise ConfigError(
                f"{self.path}: 'sweep.seeds' and the axis 'train.seed' both set the training "
                "seed; keep one"
            )
        axes = self.axes | {"train.seed": ",".join(str(s) for s in seeds)}
        return Sweep(name=self.name, path=self.path, axes=axes)

    def with_overrides(self, overrides: list[str]) -> tuple[Sweep, list[str]]:
        """Let the command line narrow or widen an axis: an override of an axis key, e.g.
        ``loss=mnrl,cosent`` against the file's ``loss: mnrl,cached_mnrl,cosent,cosine``,
        replaces that axis's values; every other override is shared by all members.

        Returns:
            This sweep with those axes replaced, and the overrides that remain shared.
        """
        axes = dict(self.axes)
        shared = []
        for override in overrides:
            key, sep, values = override.partition("=")
            if sep and key in axes:
                axes[key] = values
            else:
                shared.append(override)
        return Sweep(name=self.name, path=self.path, axes=axes), shared


def load_sweep(name: str, root: Path = Path(".")) -> Sweep:
    """Read ``conf/sweep/<name>.yaml`` and its axes.

    Raises:
        ConfigError: If the file is missing (the message lists the sweeps there are), has no
            axes, or does not set ``sweep.name`` to its own name.
    """
    from omegaconf import OmegaConf

    folder = root / SWEEP_DIR
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"{path}: no such sweep; there are: {', '.join(known) or 'none'}")
    raw = OmegaConf.load(path)
    axes = OmegaConf.select(raw, "hydra.sweeper.params", default=None)
    if not axes:
        raise ConfigError(f"{path}: 'hydra.sweeper.params' lists no axes to sweep")
    if OmegaConf.select(raw, "sweep.name", default=None) != name:
        raise ConfigError(f"{path}: 'sweep.name' must be {name!r}, the file's own name")
    return Sweep(name=name, path=path, axes={str(k): str(v) for k, v in axes.items()})


def members(sweep: Sweep, overrides: list[str]) -> list[list[str]]:
    """Every member's overrides, in the order ``dvc exp run --queue`` queues them.

    Args:
        sweep: The sweep.
        overrides: Overrides shared by every member (``sweep=<name>``, ``sweep.id=...`` and
            the user's own, e.g. a local dataset).
    """
    from dvc.utils.hydra import get_hydra_sweeps

    axes = [f"{key}={values}" for key, values in sweep.axes.items()]
    return [m["params.yaml"] for m in get_hydra_sweeps({"params.yaml": overrides + axes})]


def validate_members(all_overrides: list[list[str]], root: Path = Path(".")) -> None:
    """Compose and validate every member's config before anything is queued, so a typo in an
    axis fails in seconds rather than in the third member's train stage.

    Raises:
        ConfigError: Naming the member's overrides and the bad key.
    """
    from irtune.compose import compose_params

    for overrides in all_overrides:
        try:
            compose_params(overrides, root)
        except ConfigError as exc:
            raise ConfigError(f"member {exc}") from None


def sweep_config(name: str, root: Path = Path("."), overrides: list[str] | tuple = ()) -> Config:
    """The config every member of sweep ``name`` shares (its tracking store, baseline,
    seeds...), with ``overrides`` (the user's, shared by every member) applied."""
    from irtune.compose import compose
    from irtune.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        out = compose(
            [f"sweep={name}", *overrides], root=root, output=str(Path(tmp) / "params.yaml")
        )
        return load_config(out)
