"""What a search leaves behind: the chosen trial, trials.csv, importances.json and the plots.

Plots are optuna's own: plotly figures saved as self-contained HTML (plotly.js inlined, so a
file opens offline and on its own, e.g. as a kfp HTML artefact) and the matplotlib versions
saved as PNG (no kaleido needed).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionrec.io import write_json

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)
TARGET_NAMES = ["valid ndcg@20", "latency ms"]


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def choose_trial(study: optuna.Study, latency_budget_ms: float) -> FrozenTrial | None:
    """The trial whose config the search recommends (None when no trial completed).

    Single objective: the best validation NDCG@20. Multi-objective: among the Pareto front,
    the best NDCG@20 whose latency is within the budget; when none is, the fastest trial.
    """
    if not complete_trials(study):
        return None
    if len(study.directions) == 1:
        return study.best_trial
    front = study.best_trials
    within = [t for t in front if t.values[1] <= latency_budget_ms]
    if within:
        return max(within, key=lambda t: (t.values[0], -t.values[1]))
    log.warning("no Pareto trial scores within %.2f ms; choosing the fastest", latency_budget_ms)
    return min(front, key=lambda t: (t.values[1], -t.values[0]))


def default_trial(study: optuna.Study) -> FrozenTrial | None:
    """The (last) finished trial of the enqueued default config, if any."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("default")
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    return done[-1] if done else None


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    """One row per trial: number, state, value(s), params, user attributes, timings."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "datetime_start", "datetime_complete",
                                          "duration", "params", "user_attrs"), multi_index=False)
    if "user_attrs_config" in frame.columns:  # the full config is in best.yaml / the study; keep the csv flat
        frame = frame.drop(columns=["user_attrs_config"])
    if "duration" in frame.columns:
        frame["duration"] = frame["duration"].dt.total_seconds()
    if len(study.directions) > 1:
        frame = frame.rename(columns={"values_0": "value_ndcg@20", "values_1": "value_latency_ms"})
    frame.to_csv(path, index=False)
    return path


def _target(study: optuna.Study) -> Any:
    return (lambda t: t.values[0]) if len(study.directions) > 1 else None


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances for validation NDCG@20 (empty when too few trials completed)."""
    import optuna

    if len(complete_trials(study)) < 2:
        return {}
    try:
        values = optuna.importance.get_param_importances(study, target=_target(study))
    except (ValueError, RuntimeError) as exc:
        log.warning("parameter importances not computed: %s", exc)
        return {}
    return {k: float(v) for k, v in values.items()}


def write_importances(study: optuna.Study, path: Path) -> dict[str, float]:
    values = importances(study)
    write_json(path, {"target": "valid ndcg@20", "n_complete": len(complete_trials(study)), "importances": values})
    return values


def _figures(study: optuna.Study, imps: dict[str, float]) -> dict[str, tuple[Any, Any]]:
    """{name: (plotly builder, matplotlib builder)}, each a zero-argument callable."""
    import optuna.visualization as pv
    import optuna.visualization.matplotlib as pm

    target, name = _target(study), TARGET_NAMES[0]
    figs: dict[str, tuple[Any, Any]] = {
        "optimization_history": (lambda: pv.plot_optimization_history(study, target=target, target_name=name),
                                 lambda: pm.plot_optimization_history(study, target=target, target_name=name)),
        "parallel_coordinate": (lambda: pv.plot_parallel_coordinate(study, target=target, target_name=name),
                                lambda: pm.plot_parallel_coordinate(study, target=target, target_name=name)),
    }
    if imps:
        figs["param_importances"] = (
            lambda: pv.plot_param_importances(study, target=target, target_name=name),
            lambda: pm.plot_param_importances(study, target=target, target_name=name))
    if len(study.directions) > 1:
        figs["pareto_front"] = (lambda: pv.plot_pareto_front(study, target_names=TARGET_NAMES),
                                lambda: pm.plot_pareto_front(study, target_names=TARGET_NAMES))
    return figs


def write_plots(study: optuna.Study, plots_dir: Path, imps: dict[str, float]) -> list[Path]:
    """Save each figure as <name>.html and <name>.png; a figure that fails is logged and skipped."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import optuna

    plots_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if not complete_trials(study):
        return written
    for name, (plotly_fig, mpl_fig) in _figures(study, imps).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # matplotlib: a constant parameter's flat axis
            try:
                html = plots_dir / f"{name}.html"
                plotly_fig().write_html(html, include_plotlyjs=True)
                written.append(html)
            except (ImportError, ValueError, RuntimeError) as exc:
                log.warning("plot %s (html) skipped: %s", name, exc)
            try:
                ax = mpl_fig()
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(10, 6)
                fig.tight_layout()
                png = plots_dir / f"{name}.png"
                fig.savefig(png, dpi=100)
                plt.close(fig)
                written.append(png)
            except (ImportError, ValueError, RuntimeError) as exc:
                log.warning("plot %s (png) skipped: %s", name, exc)
    return written
