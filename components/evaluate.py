"""kfp component `evaluate`: fusionrec.steps.run_evaluate plus the champion/challenger gate."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    ingested: Input[Dataset],
    features: Input[Dataset],
    split_data: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    cfg: dict,
    champion_metrics: dict,
) -> bool:
    """Evaluate the model against the baselines; return whether it may replace the champion.

    champion_metrics: the serving model's flat test metrics ({"ndcg@20": ..., "holdout": ...});
    empty when nothing serves yet (then evaluate.champion, a path, or no champion decides).
    """
    from html import escape
    from pathlib import Path

    from fusionrec.config import EvaluateConfig
    from fusionrec.io import read_json
    from fusionrec.steps import run_evaluate

    out = Path(evaluation.path)
    result = run_evaluate(Path(ingested.path), Path(features.path), Path(split_data.path), Path(model.path), out,
                          EvaluateConfig(**cfg), champion_metrics=champion_metrics or None)
    promotion = read_json(out / "promotion.json")
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    metrics.log_metric("promote", int(bool(promotion["promote"])))
    table = out / "comparison.md"
    body = table.read_text() if table.exists() else "no comparison table"
    page = f"<p>{escape(promotion['reason'])}</p><pre>{escape(body)}</pre>"
    Path(report.path).write_text(f"<html><body>{page}</body></html>")
    return bool(promotion["promote"])
