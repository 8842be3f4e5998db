"""kfp component `evaluate`: fusionrec.steps.run_evaluate plus the champion/challenger gate."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    ingested: Input[Dataset],
    features: Input[Dataset],
    split_data: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Dataset],
    comparison: Output[Markdown],
    plots: Output[HTML],
    metrics: Output[Metrics],
    cfg: dict,
    champion_metrics: dict,
) -> bool:
    """Evaluate the model against the baselines; return whether it may replace the champion.

    The KFP UI shows `comparison` (the gate's verdict and the comparison table, as Markdown),
    `plots` (the metric-by-K and by-activity plots) and `metrics` (the headline: the model's test
    metrics and its margin over the best baseline).
    champion_metrics: the serving model's flat test metrics ({"ndcg@20": ..., "holdout": ...});
    empty when nothing serves yet (then evaluate.champion, a path, or no champion decides).
    """
    from pathlib import Path

    from fusionrec.config import EvaluateConfig
    from fusionrec.evaluation.report import HEADLINE_FILE, TABLE_FILE, plots_html
    from fusionrec.io import read_json
    from fusionrec.steps import run_evaluate

    out = Path(evaluation.path)
    run_evaluate(Path(ingested.path), Path(features.path), Path(split_data.path), Path(model.path), out,
                 EvaluateConfig(**cfg), champion_metrics=champion_metrics or None)
    promotion = read_json(out / "promotion.json")
    for key, value in read_json(out / HEADLINE_FILE).items():
        metrics.log_metric(key, value)
    metrics.log_metric("promote", int(bool(promotion["promote"])))
    verdict = f"**{'Promoted' if promotion['promote'] else 'Not promoted'}**: {promotion['reason']}\n\n"
    Path(comparison.path).write_text(verdict + (out / TABLE_FILE).read_text())
    Path(plots.path).write_text(plots_html(out))
    return bool(promotion["promote"])
