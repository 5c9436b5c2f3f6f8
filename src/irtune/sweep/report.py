"""A sweep's comparison report: recipes over seeds, tested against the sweep's baseline.

Every member of a sweep is one MLflow run tagged ``sweep`` and ``sweep_id`` (see
:mod:`irtune.tracking`), holding its params, metrics, dev curve and per-query metrics. The
report is rebuilt from those runs alone, so it can be written again at any time
(``make report SWEEP=<name>``):

1. Members that differ only in a seed axis (``train.seed``, ``prepare.seed``: see
   :data:`irtune.sweep.definition.SEED_AXES`) are the replicates of one **recipe**. A
   recipe's metrics are the mean and standard deviation over its seeds; its per-query score
   is the mean over its seeds.
2. Every recipe is tested against the sweep's baseline recipe (``sweep.baseline``, e.g.
   ``loss=mnrl``; "" = the zero-shot model) per query, with ``evaluate.test``, a bootstrap
   95% CI of the delta, and Holm's correction across the family (every recipe against the
   baseline), per metric; the verdict needs the adjusted p below alpha and the seeds to
   agree (:mod:`irtune.significance`).
3. ``reports/<sweep>/``: ``report.md``, ``report.json``, a plot of every recipe's delta
   with its CI, the metric by each axis and the dev curves.
4. MLflow, as its own convention for sweeps has it: the sweep is a parent run
   (``<sweep>-<id>``, holding the report as artifacts) and every member its child
   (``mlflow.parentRunId``). A recipe of several seeds gets its own parent run under the
   sweep's, its replicates as children, and its aggregates (mean and sd per metric, delta,
   CI, p, adjusted p, verdict) logged on it; a recipe of one seed has them logged on its
   member's run. The tags are set here, after the members ran: members run in DVC's queue
   workers with params that must not change from one invocation to the next beyond
   ``sweep.id``, so they cannot be told a parent's run id.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irtune.config import Config
from irtune.errors import ConfigError
from irtune.sweep.definition import SEED_AXES, load_sweep, sweep_config

log = logging.getLogger(__name__)

REPORT_KIND_TAG = "irtune.kind"
#: The sweep's parent run, which holds the report.
SWEEP_KIND = "sweep"
#: A recipe's parent run over its seed replicates.
RECIPE_KIND = "recipe"
RECIPE_TAG = "irtune.recipe"
PARENT_TAG = "mlflow.parentRunId"
REPORTS = Path("reports")
BASELINE_VERDICT = "(baseline)"


@dataclass
class Member:
    """One sweep member, as its MLflow run holds it."""

    run_id: str
    name: str
    #: Its value on each recipe axis.
    axes: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    #: The zero-shot model's per-query metrics, as its evaluate stage scored them.
    zero_shot: dict[str, dict[str, float]] | None = None
    #: ``(epoch, dev NDCG)`` at each epoch end.
    dev_curve: list[tuple[float, float]] = field(default_factory=list)
    #: Its seeds, e.g. ``{"train.seed": "43"}``.
    seeds: dict[str, str] = field(default_factory=dict)

    @property
    def seed_label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.seeds.items())


@dataclass
class Recipe:
    """The members of a sweep that differ only in their seeds."""

    axes: dict[str, str]
    members: list[Member]
    #: metric -> the comparison with the baseline (:func:`compare_replicates`, adjusted).
    vs_baseline: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.axes.items()) or "all members"

    def values(self, metric: str) -> list[float]:
        return [m.metrics[metric] for m in self.members if metric in m.metrics]

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def sd(self, metric: str) -> float | None:
        """Sample standard deviation over seeds; None for one seed."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else None

    def dev_curve(self) -> list[tuple[float, float]]:
        """The mean dev curve over seeds, at the epochs every seed has."""
        by_epoch: dict[float, list[float]] = {}
        for m in self.members:
            for epoch, value in m.dev_curve:
                by_epoch.setdefault(epoch, []).append(value)
        n = len(self.members)
        return sorted((e, statistics.fmean(v)) for e, v in by_epoch.items() if len(v) == n)


def axis_value(params: dict[str, str], axis: str) -> str:
    """A member's value on an axis: the param itself (``train.batch_size``), or for a config
    group such as ``loss`` the option's ``name`` (``loss.name``)."""
    if axis in params:
        return params[axis]
    return params.get(f"{axis}.name", "?")


def collect(name: str, sweep_id: str, cfg: Config, axes: list[str]) -> tuple[str, list[Member]]:
    """Fetch a sweep's member runs from MLflow.

    Args:
        name: The sweep.
        sweep_id: Which invocation; "" takes the latest.
        cfg: The sweep's config (store, experiment, metric cut-offs).
        axes: The sweep's recipe axes (seed axes are read from each member's params).

    Returns:
        ``(sweep_id, members)``.

    Raises:
        ConfigError: If the store holds no run of the sweep.
    """
    from mlflow.tracking import MlflowClient

    from irtune.evaluate import ZERO_SHOT
    from irtune.tracking import tracking_uri

    uri = tracking_uri(cfg.tracking)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    query = f"tags.sweep = '{name}'" + (f" and tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    runs = []
    if experiment is not None:
        runs = client.search_runs([experiment.experiment_id], filter_string=query, max_results=5000)
    runs = [r for r in runs if REPORT_KIND_TAG not in r.data.tags]  # parents, old reports
    if not runs:
        raise ConfigError(
            f"no MLflow run of sweep '{name}'{f' id {sweep_id}' if sweep_id else ''} in "
            f"experiment '{cfg.tracking.experiment}' of {uri}"
        )
    if not sweep_id:  # the latest invocation
        latest = max(runs, key=lambda r: (r.info.start_time, r.info.end_time or 0))
        sweep_id = latest.data.tags["sweep_id"]
        runs = [r for r in runs if r.data.tags.get("sweep_id") == sweep_id]
    runs.sort(key=lambda r: (r.info.start_time, r.info.run_name))

    dev_key = f"dev_ndcg_at_{cfg.evaluate.ndcg_k}"
    members = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            path = client.download_artifacts(run.info.run_id, "per_query.json", f"{tmp}/{i}")
            per_query = json.loads(Path(path).read_text(encoding="utf-8"))
            members.append(
                Member(
                    run_id=run.info.run_id,
                    name=run.info.run_name,
                    axes={a: axis_value(run.data.params, a) for a in axes},
                    params=dict(run.data.params),
                    metrics=run.data.metrics,
                    per_query=per_query["rerank"],
                    zero_shot=per_query.get(ZERO_SHOT),
                    # One point per epoch end, by epoch: members with other batch sizes
                    # take other step counts per epoch.
                    dev_curve=sorted(
                        (m.step / _steps_per_epoch(run), m.value)
                        for m in client.get_metric_history(run.info.run_id, dev_key)
                    ),
                )
            )
    # The seeds that tell replicates apart: those that vary (else the training seed).
    varying = [k for k in SEED_AXES if len({m.params.get(k) for m in members}) > 1]
    for member in members:
        member.seeds = {k: member.params.get(k, "?") for k in varying or SEED_AXES[:1]}
    return sweep_id, members


def _steps_per_epoch(run) -> float:
    steps = run.data.metrics.get("train.steps", 0.0)
    epochs = float(run.data.params.get("train.epochs", 0) or 0)
    return steps / epochs if steps and epochs else 1.0


def group(members: list[Member]) -> list[Recipe]:
    """The recipes: members with equal recipe axes, in the order their first member ran."""
    recipes: dict[tuple, Recipe] = {}
    for member in members:
        key = tuple(member.axes.items())
        recipes.setdefault(key, Recipe(axes=dict(member.axes), members=[])).members.append(member)
    return list(recipes.values())


def find_baseline(recipes: list[Recipe], baseline: str) -> Recipe | None:
    """The recipe matching ``key=value`` (``sweep.baseline``); None for "" or no match."""
    if not baseline:
        return None
    key, _, value = baseline.partition("=")
    for recipe in recipes:
        if recipe.axes.get(key) == value:
            return recipe
    return None


def compare_recipes(
    recipes: list[Recipe], base: Recipe | None, metrics: list[str], cfg: Config
) -> None:
    """Test every recipe against ``base`` (None: each recipe's own zero-shot model) for each
    metric, and Holm-adjust each metric's family (every recipe against the baseline).

    Raises:
        ConfigError: If the baseline is zero-shot and a member's run lacks its per-query
            scores (logged by an irtune that did not keep them).
    """
    from irtune.significance import adjust, compare_replicates

    ev = cfg.evaluate
    family = [r for r in recipes if r is not base]
    for recipe in family:
        if base is not None:
            against = [m.per_query for m in base.members]
        else:
            missing = [m.name for m in recipe.members if m.zero_shot is None]
            if missing:
                raise ConfigError(
                    f"runs {missing} hold no zero-shot per-query scores (logged before irtune "
                    "kept them, or with evaluate.baseline off): set sweep.baseline to a "
                    "recipe, or run the sweep again"
                )
            against = [m.zero_shot for m in recipe.members]
        recipe.vs_baseline = compare_replicates(
            [m.per_query for m in recipe.members], against, ev.alpha, ev, metrics
        )
    for metric in metrics:
        adjust([r.vs_baseline[metric] for r in family], ev.alpha)
    if base is not None:
        base.vs_baseline = {
            m: {"value": base.mean(m), "delta": 0.0, "p_value": 1.0, "p_adjusted": 1.0,
                "verdict": BASELINE_VERDICT}
            for m in metrics
        }  # fmt: skip


def write_report(
    name: str, sweep_id: str = "", root: Path = Path("."), failed: list[str] | tuple = ()
) -> Path:
    """Build sweep ``name``'s report under ``reports/<name>/`` and log it to MLflow.

    Args:
        name: The sweep.
        sweep_id: Which invocation; "" takes the latest in the store.
        root: The repository.
        failed: Members that failed (DVC experiment names), listed in the report.

    Returns:
        The report's folder.
    """
    from irtune.io import atomic_path
    from irtune.significance import RULE, method

    sweep = load_sweep(name, root)
    cfg = sweep_config(name, root)
    axes = sweep.recipe_axes
    sweep_id, members = collect(name, sweep_id, cfg, axes)
    recipes = group(members)

    # 1. Significance against the sweep's baseline recipe (or the zero-shot model).
    ev = cfg.evaluate
    headline = [f"ndcg_at_{ev.ndcg_k}", f"recall_at_{ev.recall_k}", f"mrr_at_{ev.mrr_k}"]
    ndcg = headline[0]
    base = find_baseline(recipes, cfg.sweep.baseline)
    if cfg.sweep.baseline and base is None:
        log.warning(
            "No recipe matches sweep.baseline %r; comparing with zero-shot instead",
            cfg.sweep.baseline,
        )
    compare_recipes(recipes, base, headline, cfg)
    recipes.sort(key=lambda r: _or(r.mean(ndcg), float("-inf")), reverse=True)
    against = f"recipe `{base.name}`" if base else "the zero-shot model"
    family = len(recipes) - (base is not None)

    # 2. The tables, the plots, and a JSON copy, written together or not at all.
    out_dir = root / REPORTS / name
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        plots = [_plot_deltas(recipes, base, ndcg, against, tmp)]
        plots += [_plot_by_axis(recipes, axis, sweep, ndcg, tmp) for axis in axes]
        plots.append(_plot_dev_curves(recipes, ndcg, tmp))
        md = _markdown(
            name, sweep_id, sweep, cfg, recipes, headline, against, family, failed,
            [p for p in plots if p],
        )  # fmt: skip
        (tmp / "report.md").write_text(md, encoding="utf-8")
        summary = {
            "sweep": name,
            "sweep_id": sweep_id,
            "baseline": against,
            "metric": ndcg,
            "method": method(ev, correction="holm") | {"family": family, "rule": RULE},
            "failed": list(failed),
            "recipes": [
                {
                    "name": r.name,
                    "axes": r.axes,
                    "seeds": [m.seed_label for m in r.members],
                    "members": [m.name for m in r.members],
                    "metrics": {
                        k: {"mean": r.mean(k), "sd": r.sd(k), "values": r.values(k)}
                        for k in headline
                    },
                    "vs_baseline": r.vs_baseline,
                    "verdict": r.vs_baseline[ndcg]["verdict"],
                    "dev_curve": r.dev_curve(),
                }
                for r in recipes
            ],
            "members": [
                {
                    "name": m.name,
                    "run_id": m.run_id,
                    "recipe": r.name,
                    "axes": m.axes,
                    "seeds": m.seeds,
                    "metrics": {k: m.metrics.get(k) for k in headline},
                    "dev_curve": m.dev_curve,
                }
                for r in recipes
                for m in r.members
            ],
        }
        (tmp / "report.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    log.info(
        "Wrote the report of sweep %s (%d recipes, %d members) to %s",
        name,
        len(recipes),
        len(members),
        out_dir,
    )
    _log_report(out_dir, name, sweep_id, cfg, recipes, headline)
    return out_dir


def _axes_run(members: list[Member], axes: list[str]) -> list[str]:
    """Each axis with the values its members ran, in the table's order (the command line may
    have narrowed the file's axes), the seeds last."""
    seen: dict[str, list[str]] = {}
    for m in members:
        for key, value in [*((a, m.axes[a]) for a in axes), *m.seeds.items()]:
            values = seen.setdefault(key, [])
            if value not in values:
                values.append(value)
    return [f"`{k}` = {','.join(v)}" for k, v in seen.items()]


def _markdown(name, sweep_id, sweep, cfg, recipes, headline, against, family, failed, images):
    from irtune.significance import RULE, describe

    ev = cfg.evaluate
    ndcg = headline[0]
    axes = sweep.recipe_axes
    members = [m for r in recipes for m in r.members]
    counts = sorted({len(r.members) for r in recipes})
    seeds = "/".join(str(c) for c in counts)
    lines = [
        f"# Sweep `{name}` ({sweep_id})",
        "",
        f"{len(recipes)} recipes x {seeds} seed(s) = {len(members)} members from "
        f"`{sweep.path.as_posix()}`, axes: " + "; ".join(_axes_run(members, axes)) + ".",
        f"Metrics of the final run (rerank; the retrieval run when `rerank.top_k` is 0) on "
        f"`{cfg.dataset.name}` {cfg.dataset.test_split}, mean ± sd over seeds, best first.",
        "",
        f"Significance: each recipe's {ndcg} against {against}, per query (a recipe's "
        f"per-query score is the mean over its seeds): {describe(ev)}, two-sided; Δ with its "
        f"95% bootstrap CI over queries; p adjusted with Holm's method across the "
        f"{family} recipe(s) tested. Verdict at alpha {ev.alpha}: {RULE}.",
        "",
        "| # | "
        + " | ".join(axes)
        + " | seeds | "
        + " | ".join(headline)
        + f" | Δ {ndcg} [95% CI] | p | p (Holm) | verdict |",
        "|" + "---|" * (len(axes) + len(headline) + 6),
    ]
    for rank, r in enumerate(recipes, 1):
        vb = r.vs_baseline[ndcg]
        cells = [str(rank), *(r.axes[a] for a in axes), str(len(r.members))]
        cells += [_mean_sd(r.mean(k), r.sd(k)) for k in headline]
        if vb["verdict"] == BASELINE_VERDICT:
            cells += ["–", "–", "–"]
        else:
            cells += [
                f"{vb['delta']:+.4f} [{vb['ci_low']:+.4f}, {vb['ci_high']:+.4f}]",
                _fmt_p(vb["p_value"]),
                _fmt_p(vb["p_adjusted"]),
            ]
        cells.append(vb["verdict"])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"| member | recipe | seed | {ndcg} | own Δ {ndcg} |", "|---|---|---|---|---|"]
    for r in recipes:
        own = r.vs_baseline[ndcg].get("seed_deltas") or [None] * len(r.members)
        for m, delta in zip(r.members, own, strict=True):
            lines.append(
                f"| `{m.name}` | {r.name} | {m.seed_label} | {_fmt(m.metrics.get(ndcg))} "
                f"| {'–' if delta is None else f'{delta:+.4f}'} |"
            )
    if failed:
        lines += [
            "",
            "Failed members (no row): "
            + ", ".join(f"`{f}`" for f in failed)
            + " -- see `dvc queue logs <name>`.",
        ]
    lines += [""] + [f"![{img.stem}]({img.name})" for img in images]
    lines += [
        "",
        f"MLflow: experiment `{cfg.tracking.experiment}`, parent run `{name}-{sweep_id}` "
        f"(`tags.sweep_id = '{sweep_id}'`); DVC: `make exps`.",
        "",
    ]
    return "\n".join(lines)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _mean_sd(mean: float | None, sd: float | None) -> str:
    return _fmt(mean) + ("" if sd is None else f" ± {sd:.4f}")


def _fmt_p(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    if value == 0:  # below the 6 decimals p-values are rounded to
        return "<1e-6"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_deltas(
    recipes: list[Recipe], base: Recipe | None, metric: str, against: str, out: Path
) -> Path | None:
    """Every tested recipe's delta with its 95% CI (coloured by verdict) and each seed's own
    delta (crosses), best at the top; None when nothing was tested."""
    tested = [r for r in recipes if r is not base]
    if not tested:
        return None
    plt = _pyplot()
    colours = {"better": "tab:green", "worse": "tab:red"}
    fig, ax = plt.subplots(figsize=(7.2, 1.4 + 0.6 * len(tested)))
    labels = []
    for y, r in enumerate(reversed(tested)):
        vb = r.vs_baseline[metric]
        colour = colours.get(vb["verdict"].split(" (")[0], "tab:gray")
        low, high = max(vb["delta"] - vb["ci_low"], 0), max(vb["ci_high"] - vb["delta"], 0)
        ax.errorbar(vb["delta"], y, xerr=[[low], [high]], fmt="o", color=colour, capsize=4)
        if len(r.members) > 1:
            own = vb["seed_deltas"]
            ax.scatter(own, [y] * len(own), marker="x", color=colour, alpha=0.6)
        seeds = f" ({len(r.members)} seeds)" if len(r.members) > 1 else ""
        labels.append(f"{r.name}{seeds}\n{vb['verdict']}, p(Holm) {_fmt_p(vb['p_adjusted'])}")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(tested)), labels, fontsize="small")
    ax.set_ylim(-0.6, len(tested) - 0.4)
    ax.set_xlabel(f"Δ test {metric} (95% bootstrap CI; x: each seed's own)")
    ax.set_title(f"{metric} against {against.replace('`', '')}", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = out / f"delta_{metric}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_by_axis(recipes: list[Recipe], axis: str, sweep, metric: str, out: Path) -> Path:
    """``metric`` (mean ± sd over seeds) by the axis' values (in the sweep file's order), one
    line per combination of the other axes' values."""
    plt = _pyplot()
    order = [v.strip() for v in sweep.axes[axis].split(",")]
    seen = {r.axes[axis] for r in recipes}
    order = [v for v in order if v in seen] + sorted(seen - set(order))
    others = [a for a in sweep.recipe_axes if a != axis]
    series: dict[str, dict[str, Recipe]] = {}
    for r in recipes:
        label = ", ".join(f"{a}={r.axes[a]}" for a in others) or metric
        series.setdefault(label, {})[r.axes[axis]] = r
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, by_value in sorted(series.items()):
        xs = [i for i, v in enumerate(order) if v in by_value]
        points = [by_value[order[i]] for i in xs]
        ax.errorbar(
            xs, [_or(p.mean(metric), float("nan")) for p in points],
            yerr=[_or(p.sd(metric), 0.0) for p in points], marker="o", capsize=3, label=label,
        )  # fmt: skip
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel(axis)
    ax.set_ylabel(f"test {metric} (mean ± sd over seeds)")
    ax.set_title(f"{metric} by {axis}")
    ax.grid(alpha=0.3)
    if len(series) > 1 or others:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / f"{metric}_by_{axis.replace('.', '_')}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_dev_curves(recipes: list[Recipe], metric: str, out: Path) -> Path | None:
    """Each recipe's mean dev curve (one point per epoch end); None when none has one."""
    curves = [(r, r.dev_curve()) for r in recipes]
    if not any(curve for _, curve in curves):
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for r, curve in curves:
        if curve:
            epochs, values = zip(*curve, strict=True)
            ax.plot(epochs, values, marker="o", label=r.name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"dev {metric} (mean over seeds)")
    ax.set_title("Dev curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / "dev_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sweep_run(client, experiment_id: str, name: str, sweep_id: str) -> str:
    """The id of the sweep's parent run ``<sweep>-<id>``, created if the store has none."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.sweep_id = '{sweep_id}' and tags.`{REPORT_KIND_TAG}` = '{SWEEP_KIND}'",
    )
    if found:
        return found[0].info.run_id
    tags = {"sweep": name, "sweep_id": sweep_id, REPORT_KIND_TAG: SWEEP_KIND}
    return client.create_run(experiment_id, run_name=f"{name}-{sweep_id}", tags=tags).info.run_id


def open_sweep_run(name: str, sweep_id: str, cfg: Config) -> str | None:
    """Create the sweep's parent run before its members run, so the MLflow UI shows the sweep
    while it runs (its members are attached to it by the report). None, with a warning, if
    the store cannot be reached: the report creates it then."""
    from irtune.tracking import experiment_id, tracking_uri

    try:
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(cfg.tracking)
        client = MlflowClient(tracking_uri=uri)
        exp_id = experiment_id(client, cfg.tracking.experiment, uri)
        return sweep_run(client, exp_id, name, sweep_id)
    except Exception as exc:  # the sweep runs without it
        log.warning("Could not create the sweep's MLflow parent run: %s", exc)
        return None


def _log_report(out_dir: Path, name: str, sweep_id: str, cfg: Config, recipes, headline) -> None:
    """The sweep's MLflow parent run (with the report as artifacts), the recipes' parent runs,
    every member under its parent, and each recipe's aggregates (see the module docstring).
    Writing the report again reuses the same runs."""
    import time

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from irtune.tracking import experiment_id, tracking_uri

    ndcg = headline[0]
    now = int(time.time() * 1000)
    try:
        uri = tracking_uri(cfg.tracking)
        client = MlflowClient(tracking_uri=uri)
        exp_id = experiment_id(client, cfg.tracking.experiment, uri)
        parent = sweep_run(client, exp_id, name, sweep_id)
        existing = {
            r.data.tags.get(RECIPE_TAG): r.info.run_id
            for r in client.search_runs(
                [exp_id],
                filter_string=f"tags.sweep_id = '{sweep_id}' and "
                f"tags.`{REPORT_KIND_TAG}` = '{RECIPE_KIND}'",
                max_results=5000,
            )
        }
        for recipe in recipes:
            metrics, params = {}, []
            if len(recipe.members) > 1:
                run_id = existing.get(recipe.name)
                if run_id is None:
                    tags = {
                        "sweep": name, "sweep_id": sweep_id, REPORT_KIND_TAG: RECIPE_KIND,
                        RECIPE_TAG: recipe.name, PARENT_TAG: parent,
                    }  # fmt: skip
                    run_name = f"{name}-{sweep_id} {recipe.name}"
                    run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
                for m in headline:
                    metrics[m], metrics[f"{m}_sd"] = recipe.mean(m), recipe.sd(m)
                first = recipe.members[0].params
                params = [Param(k, v) for k, v in first.items() if k not in SEED_AXES]
                params.append(Param("seeds", "; ".join(m.seed_label for m in recipe.members)))
                children = [m.run_id for m in recipe.members]
            else:
                run_id, children = recipe.members[0].run_id, []
            for m in headline:
                result = recipe.vs_baseline[m]
                for key in ("delta", "ci_low", "ci_high", "p_value", "p_adjusted"):
                    if key in result:
                        metrics[f"vs_baseline.{m}_{key}"] = result[key]
            tags = {f"vs_baseline.verdict.{m}": recipe.vs_baseline[m]["verdict"] for m in headline}
            tags |= {"verdict": recipe.vs_baseline[ndcg]["verdict"], PARENT_TAG: parent}
            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            for i in range(0, len(params), 100):  # log_batch takes 100 params a call
                client.log_batch(run_id, params=params[i : i + 100])
            for child in children:
                client.set_tag(child, PARENT_TAG, run_id)
            if children:
                client.set_terminated(run_id)
        best = recipes[0]
        client.log_metric(parent, f"best_{ndcg}", _or(best.mean(ndcg), float("nan")))
        client.set_tag(parent, "best_recipe", best.name)
        client.log_artifacts(parent, str(out_dir))
        client.set_terminated(parent)
        log.info("Logged the report to MLflow: sweep run %s, %d recipes", parent, len(recipes))
    except Exception as exc:  # the report on disk stands on its own
        log.warning("Could not log the report to MLflow: %s", exc)
