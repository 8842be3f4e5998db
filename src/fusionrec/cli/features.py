"""CLI command `featurize` (thin over fusionrec.steps.run_featurize)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app
from fusionrec.cli.progress import fail, summary


@app.command()
def featurize(
    ingested_dir: Path = typer.Argument(..., help="output folder of `fusionrec ingest`"),
    out_dir: Path = typer.Argument(..., help="features folder to write (matrices, masks, manifest.json)"),
    params: Path = ParamsOption,
    text: list[str] = typer.Option(None, "--text", help="text encoder(s), overriding params.yaml"),
    image: list[str] = typer.Option(None, "--image", help="image encoder(s), overriding params.yaml"),
    vectors: list[str] = typer.Option(None, "--vectors", help="vectors:<path> source(s), overriding params.yaml"),
) -> None:
    """Embed every item with the configured text and image encoders (cached by content hash)."""
    from fusionrec.config import ConfigError, FeaturizeConfig, load_section
    from fusionrec.features.encoder import EncoderError
    from fusionrec.steps import run_featurize

    started = time.perf_counter()
    try:
        cfg = load_section(params, "featurize")
        assert isinstance(cfg, FeaturizeConfig)
        cfg = cfg.with_overrides(text_encoders=text or None, image_encoders=image or None,
                                 vector_sources=vectors or None)
        assert isinstance(cfg, FeaturizeConfig)
        result = run_featurize(ingested_dir, out_dir, cfg)  # the encoders draw their own per-batch bars (tqdm)
    except (ConfigError, EncoderError, ValueError, FileNotFoundError) as exc:
        raise fail("featurize", exc) from None
    summary("featurize", result.metrics, started, out_dir)
