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
    """Evaluate the model against the baselines; return whether it may replace the champion."""
    from pathlib import Path

    from fusionrec.config import EvaluateConfig
    from fusionrec.evaluation.gate import decide_promotion
    from fusionrec.io import read_json, write_json
    from fusionrec.steps import run_evaluate

    eval_cfg = EvaluateConfig(**cfg)
    out = Path(evaluation.path)
    result = run_evaluate(Path(ingested.path), Path(features.path), Path(split_data.path), Path(model.path), out, eval_cfg)
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    table = out / "comparison.md"
    body = table.read_text() if table.exists() else "no comparison table"
    Path(report.path).write_text(f"<html><body><pre>{body}</pre></body></html>")
    decision = decide_promotion(read_json(out / "metrics.json"), champion_metrics or None, eval_cfg)
    write_json(out / "promotion.json", decision.as_dict())
    return bool(decision.promote)
