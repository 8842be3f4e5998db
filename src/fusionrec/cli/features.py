"""CLI commands: features (registered on fusionrec.cli.app.app)."""

from __future__ import annotations

from pathlib import Path

import typer

from fusionrec.cli.app import ParamsOption, app


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
    from fusionrec.features.pipeline import run_featurize

    try:
        cfg = load_section(params, "featurize")
        assert isinstance(cfg, FeaturizeConfig)
        cfg = cfg.with_overrides(text_encoders=text or None, image_encoders=image or None,
                                 vector_sources=vectors or None)
        assert isinstance(cfg, FeaturizeConfig)
        result = run_featurize(ingested_dir, out_dir, cfg)
    except (ConfigError, EncoderError, ValueError, FileNotFoundError) as exc:
        typer.secho(f"featurize failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    for name, value in result.metrics.items():
        typer.echo(f"{name}: {value}")
    typer.echo(f"wrote {out_dir}")
