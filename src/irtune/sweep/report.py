"""A sweep's comparison report: one Markdown table and a few plots, built from MLflow.

Every member of a sweep is one MLflow run tagged ``sweep`` and ``sweep_id`` (see
:mod:`irtune.tracking`), holding its params, metrics, dev curve and per-query metrics. The
report is rebuilt from those runs alone, so it can be written again at any time
(``make report SWEEP=<name>``), and it is logged back to MLflow as the artifacts of one
``<sweep>-<id>-report`` run in the same experiment.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irtune.config import Config
from irtune.errors import ConfigError
from irtune.sweep.definition import load_sweep, sweep_config

log = logging.getLogger(__name__)

REPORT_KIND_TAG = "irtune.kind"
REPORT_KIND = "sweep-report"
REPORTS = Path("reports")


@dataclass
class Member:
    """One sweep member, as its MLflow run holds it."""

    run_id: str
    name: str
    axes: dict[str, str]
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    #: ``(epoch, dev NDCG)`` at each epoch end.
    dev_curve: list[tuple[float, float]] = field(default_factory=list)
    vs_baseline: dict[str, Any] = field(default_factory=dict)


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
        axes: The sweep's axis keys.

    Returns:
        ``(sweep_id, members)``.

    Raises:
        ConfigError: If the store holds no run of the sweep.
    """
    from mlflow.tracking import MlflowClient

    from irtune.tracking import tracking_uri

    uri = tracking_uri(cfg.tracking)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    query = f"tags.sweep = '{name}'" + (f" and tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    runs = []
    if experiment is not None:
        runs = client.search_runs([experiment.experiment_id], filter_string=query, max_results=5000)
    runs = [r for r in runs if r.data.tags.get(REPORT_KIND_TAG) != REPORT_KIND]
    if not runs:
        raise ConfigError(
            f"no MLflow run of sweep '{name}'{f' id {sweep_id}' if sweep_id else ''} in "
            f"experiment '{cfg.tracking.experiment}' of {uri}"
        )
    if not sweep_id:  # the latest invocation
        sweep_id = max(runs, key=lambda r: r.info.start_time).data.tags["sweep_id"]
        runs = [r for r in runs if r.data.tags.get("sweep_id") == sweep_id]

    dev_key = f"dev_ndcg_at_{cfg.evaluate.ndcg_k}"
    members = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            path = client.download_artifacts(run.info.run_id, "per_query.json", tmp)
            per_query = json.loads(Path(path).read_text(encoding="utf-8"))["rerank"]
            members.append(
                Member(
                    run_id=run.info.run_id,
                    name=run.info.run_name,
                    axes={a: axis_value(run.data.params, a) for a in axes},
                    metrics=run.data.metrics,
                    per_query=per_query,
                    # One point per epoch end, by epoch: members with other batch sizes
                    # take other step counts per epoch.
                    dev_curve=sorted(
                        (m.step / _steps_per_epoch(run), m.value)
                        for m in client.get_metric_history(run.info.run_id, dev_key)
                    ),
                )
            )
    return sweep_id, members


def _steps_per_epoch(run) -> float:
    steps = run.data.metrics.get("train.steps", 0.0)
    epochs = float(run.data.params.get("train.epochs", 0) or 0)
    return steps / epochs if steps and epochs else 1.0


def find_baseline(members: list[Member], baseline: str) -> Member | None:
    """The member matching ``key=value`` (``sweep.baseline``); None for "" or no match."""
    if not baseline:
        return None
    key, _, value = baseline.partition("=")
    for member in members:
        if member.axes.get(key) == value:
            return member
    return None


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
    from irtune.evaluate import compare
    from irtune.io import atomic_path

    sweep = load_sweep(name, root)
    cfg = sweep_config(name, root)
    axes = list(sweep.axes)
    sweep_id, members = collect(name, sweep_id, cfg, axes)

    # 1. Significance against the sweep's own baseline member (or the zero-shot model).
    ev = cfg.evaluate
    headline = [f"ndcg_at_{ev.ndcg_k}", f"recall_at_{ev.recall_k}", f"mrr_at_{ev.mrr_k}"]
    ndcg = headline[0]
    base = find_baseline(members, cfg.sweep.baseline)
    if cfg.sweep.baseline and base is None:
        log.warning(
            "No member matches sweep.baseline %r; comparing with zero-shot instead",
            cfg.sweep.baseline,
        )
    for member in members:
        if member is base:
            member.vs_baseline = {"delta": 0.0, "p_value": 1.0, "verdict": "(baseline)"}
        elif base is not None:
            member.vs_baseline = compare(member.per_query, base.per_query, ev.alpha)[ndcg]
        else:  # the evaluate stage's own comparison with the zero-shot model
            p = member.metrics.get(f"rerank.{ndcg}_p_value", float("nan"))
            delta = member.metrics.get(f"rerank.{ndcg}_delta", float("nan"))
            verdict = "no significant difference"
            if p < ev.alpha:
                verdict = "better" if delta > 0 else "worse"
            member.vs_baseline = {"delta": delta, "p_value": p, "verdict": verdict}
    members.sort(key=lambda m: m.metrics.get(ndcg, float("-inf")), reverse=True)
    against = f"member `{base.name}` ({cfg.sweep.baseline})" if base else "the zero-shot model"

    # 2. The table, the plots, and a JSON copy, written together or not at all.
    out_dir = root / REPORTS / name
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        plots = [_plot_by_axis(members, axis, sweep, ndcg, tmp) for axis in axes]
        curves = _plot_dev_curves(members, ndcg, tmp)
        md = _markdown(
            name,
            sweep_id,
            sweep,
            cfg,
            members,
            headline,
            against,
            failed,
            plots + ([curves] if curves else []),
        )
        (tmp / "report.md").write_text(md, encoding="utf-8")
        summary = {
            "sweep": name,
            "sweep_id": sweep_id,
            "baseline": against,
            "failed": list(failed),
            "members": [
                {
                    "name": m.name,
                    "run_id": m.run_id,
                    "axes": m.axes,
                    "metrics": {k: m.metrics.get(k) for k in headline},
                    "vs_baseline": m.vs_baseline,
                    "dev_curve": m.dev_curve,
                }
                for m in members
            ],
        }
        (tmp / "report.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    log.info("Wrote the report of sweep %s (%d members) to %s", name, len(members), out_dir)
    _log_report(out_dir, name, sweep_id, cfg, members, ndcg)
    return out_dir


def _markdown(name, sweep_id, sweep, cfg, members, headline, against, failed, images) -> str:
    ev = cfg.evaluate
    ndcg = headline[0]
    axes = list(sweep.axes)
    lines = [
        f"# Sweep `{name}` ({sweep_id})",
        "",
        f"{len(members)} members from `{sweep.path.as_posix()}`, axes: "
        + "; ".join(f"`{k}` = {v}" for k, v in sweep.axes.items())
        + ".",
        f"Metrics of the final run (rerank; the retrieval run when `rerank.top_k` is 0) on "
        f"`{cfg.dataset.name}` {cfg.dataset.test_split}, best first. Significance: paired "
        f"t-test per query of {ndcg} against {against}, alpha {ev.alpha}; the last column is "
        "each member's own test against the zero-shot base model.",
        "",
        "| # | member | "
        + " | ".join(axes)
        + " | "
        + " | ".join(headline)
        + f" | Δ {ndcg} | p | verdict | p vs zero-shot |",
        "|" + "---|" * (len(axes) + len(headline) + 6),
    ]
    for rank, m in enumerate(members, 1):
        vb = m.vs_baseline
        cells = [str(rank), f"`{m.name}`", *(m.axes[a] for a in axes)]
        cells += [_fmt(m.metrics.get(k)) for k in headline]
        cells += [f"{vb['delta']:+.4f}", _fmt_p(vb["p_value"]), vb["verdict"]]
        cells += [_fmt_p(m.metrics.get(f"rerank.{ndcg}_p_value"))]
        lines.append("| " + " | ".join(cells) + " |")
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
        f"MLflow: experiment `{cfg.tracking.experiment}`, runs with "
        f"`tags.sweep_id = '{sweep_id}'`; DVC: `make exps`.",
        "",
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _fmt_p(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    if value == 0:  # below the 6 decimals p-values are rounded to
        return "<1e-6"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _plot_by_axis(members: list[Member], axis: str, sweep, metric: str, out: Path) -> Path:
    """``metric`` by the axis' values (in the sweep file's order), one line per combination
    of the other axes' values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [v.strip() for v in sweep.axes[axis].split(",")]
    seen = {m.axes[axis] for m in members}
    order = [v for v in order if v in seen] + sorted(seen - set(order))
    others = [a for a in sweep.axes if a != axis]
    series: dict[str, dict[str, float]] = {}
    for m in members:
        label = ", ".join(f"{a}={m.axes[a]}" for a in others) or metric
        series.setdefault(label, {})[m.axes[axis]] = m.metrics.get(metric, float("nan"))
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, values in sorted(series.items()):
        xs = [i for i, v in enumerate(order) if v in values]
        ax.plot(xs, [values[order[i]] for i in xs], marker="o", label=label)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel(axis)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{metric} by {axis}")
    ax.grid(alpha=0.3)
    if len(series) > 1 or others:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / f"{metric}_by_{axis.replace('.', '_')}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_dev_curves(members: list[Member], metric: str, out: Path) -> Path | None:
    """Each member's dev curve (one point per epoch end); None when no member has one."""
    if not any(m.dev_curve for m in members):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for m in members:
        if m.dev_curve:
            epochs, values = zip(*m.dev_curve, strict=True)
            label = ", ".join(f"{k}={v}" for k, v in m.axes.items())
            ax.plot(epochs, values, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"dev {metric}")
    ax.set_title("Dev curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / "dev_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _log_report(out_dir: Path, name: str, sweep_id: str, cfg: Config, members, ndcg) -> None:
    """Attach the report to one ``<sweep>-<id>-report`` run (the same run when rewritten)."""
    from mlflow.tracking import MlflowClient

    from irtune.tracking import tracking_uri

    try:
        client = MlflowClient(tracking_uri=tracking_uri(cfg.tracking))
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        found = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.sweep_id = '{sweep_id}' and "
            f"tags.`{REPORT_KIND_TAG}` = '{REPORT_KIND}'",
        )
        if found:
            run_id = found[0].info.run_id
        else:
            tags = {"sweep": name, "sweep_id": sweep_id, REPORT_KIND_TAG: REPORT_KIND}
            run_id = client.create_run(
                experiment.experiment_id, run_name=f"{name}-{sweep_id}-report", tags=tags
            ).info.run_id
        best = members[0]
        client.log_metric(run_id, f"best_{ndcg}", best.metrics.get(ndcg, float("nan")))
        client.set_tag(run_id, "best_member", best.name)
        client.log_artifacts(run_id, str(out_dir))
        client.set_terminated(run_id)
        log.info("Logged the report to MLflow run %s", run_id)
    except Exception as exc:  # the report on disk stands on its own
        log.warning("Could not log the report to MLflow: %s", exc)
