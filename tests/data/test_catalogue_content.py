"""Catalogues of any content: text, images, vectors only, or nothing but ids; missing content is masked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from tests.data.image_samples import png_bytes, write
from tests.data.latent_catalogue import write_vectors_catalogue

from fusionrec import schema
from fusionrec.config import FeaturizeConfig, IngestConfig
from fusionrec.data.ingest import run_ingest
from fusionrec.features.pipeline import run_featurize
from fusionrec.features.store import load_features, read_manifest


def test_ids_and_two_npy_vector_files_ingest_and_featurize(tmp_path: Path) -> None:
    cat = write_vectors_catalogue(tmp_path, users=40, items=60, per_user=8)
    assert list(pd.read_csv(cat.root / "items.csv").columns) == ["item_id"]  # no other column
    result = run_ingest(cat.root, tmp_path / "ingested", IngestConfig())
    assert result.metrics["items"] == 60 and result.metrics["rejected"] == 0  # none rejected as empty
    report = json.loads((tmp_path / "ingested" / schema.REPORT).read_text())
    assert report["coverage"]["neither"] == 1.0 and report["items_without_text_or_image"] == 60
    assert report["timestamp"]["forms"] == {"iso8601": 320}

    cfg = FeaturizeConfig(text_encoders=["none"], image_encoders=["none"], vector_sources=cat.vector_sources)
    feat = run_featurize(tmp_path / "ingested", tmp_path / "features", cfg)
    features = load_features(tmp_path / "features")
    assert sorted(features) == ["vectors:audio", "vectors:image"]
    items = pd.read_parquet(tmp_path / "ingested" / schema.INGESTED_ITEMS)
    audio_ids = set((cat.audio.with_suffix(".ids.txt")).read_text().split())
    assert features["vectors:audio"].mask.tolist() == [i in audio_ids for i in items[schema.ITEM_ID]]
    both = features["vectors:audio"].mask | features["vectors:image"].mask
    manifest = read_manifest(tmp_path / "features")
    assert feat.metrics["items_without_content"] == manifest["content"]["items_without_content"] == 4
    assert sorted(items.loc[~both, schema.ITEM_ID]) == cat.without_content
    assert sorted(manifest["content"]["items_without_content_examples"]) == cat.without_content


def test_each_item_keeps_the_content_it_has(tmp_path: Path) -> None:
    """Text only, image only, both, nothing: all kept; rows only where the file's text cells are empty."""
    root = tmp_path / "data"
    write(root / "images" / "img.png", png_bytes())
    write(root / "images" / "both.png", png_bytes())
    (root / "items.csv").write_text("item_id,title\ntxt,A title\nimg,\nboth,Both\nbare,\n")
    (root / "interactions.csv").write_text("user_id,item_id\nu,txt\nu,img\nu,both\nu,bare\n")
    run_ingest(root, tmp_path / "out", IngestConfig(text_columns=["title"], max_rejected_share=0.0))
    items = pd.read_parquet(tmp_path / "out" / schema.INGESTED_ITEMS).set_index(schema.ITEM_ID)
    assert items[schema.HAS_TEXT].to_dict() == {"bare": False, "both": True, "img": False, "txt": True}
    assert items[schema.HAS_IMAGE].to_dict() == {"bare": False, "both": True, "img": True, "txt": False}
    rejected = pd.read_parquet(tmp_path / "out" / schema.REJECTED)
    assert dict(zip(rejected[schema.ITEM_ID], rejected[schema.REJ_REASON], strict=True)) == {
        "img": "empty_text", "bare": "empty_item"}
    assert "kept" in rejected.set_index(schema.ITEM_ID).loc["bare", schema.REJ_DETAIL]
    assert len(pd.read_parquet(tmp_path / "out" / schema.INGESTED_INTERACTIONS)) == 4

    (root / "items.csv").write_text("item_id\ntxt\nimg\nboth\nbare\n")  # a file without text columns
    run_ingest(root, tmp_path / "out2", IngestConfig(text_columns=["title"]))
    assert len(pd.read_parquet(tmp_path / "out2" / schema.REJECTED)) == 0  # absent modality: no per-row noise
    report = json.loads((tmp_path / "out2" / schema.REPORT).read_text())
    assert report["coverage"]["image"] == 0.5 and report["coverage"]["neither"] == 0.5
    assert np.isclose(report["coverage"]["text"], 0.0)
