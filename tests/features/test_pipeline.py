"""run_featurize: matrices + masks + manifest, the content-hash cache, bad images, serving parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import FeaturizeConfig
from fusionrec.features.pipeline import FeaturizeError, run_featurize
from fusionrec.features.registry import get_encoder, load_encoder
from fusionrec.features.store import load_features, read_manifest
from fusionrec.schema import INGESTED_ITEMS, TEXT


def test_writes_the_contract_layout(catalogue: Path, tmp_path: Path, fast_cfg: FeaturizeConfig) -> None:
    out = tmp_path / "features"
    result = run_featurize(catalogue, out, fast_cfg)
    feats = load_features(out)
    assert set(feats) == {"text:tfidf", "image:color"}
    assert feats["text:tfidf"].values.shape[0] == 6 and feats["text:tfidf"].mask.all()
    assert feats["image:color"].mask.tolist() == [True] * 5 + [False]  # i6 has no image: masked
    assert np.all(feats["image:color"].values[5] == 0)
    entry = read_manifest(out)["features"]["image:color"]
    for field in ("version", "dim", "normalization", "coverage", "wall_s", "items_per_s", "quality", "missing_modality"):
        assert field in entry, field
    assert entry["coverage"] == pytest.approx(5 / 6, abs=1e-3) and entry["missing_modality"] == 1
    assert entry["quality"]["check"] == "neighbour_label_share"
    assert result.metrics["image:color.coverage"] == entry["coverage"]
    assert json.loads((out / "encoders" / "tfidf" / "encoder.json").read_text())["dim"] == feats["text:tfidf"].dim


def test_cache_rerun_encodes_nothing_and_one_change_reencodes_one(catalogue: Path, tmp_path: Path) -> None:
    cfg = FeaturizeConfig(text_encoders=["minilm"], image_encoders=["color"], num_workers=0,
                          cache_dir=str(tmp_path / "cache"), quality_k=2)
    first = run_featurize(catalogue, tmp_path / "f1", cfg).metrics
    assert first["text:minilm.encoded"] == 6 and first["image:color.encoded"] == 5
    second = run_featurize(catalogue, tmp_path / "f2", cfg).metrics
    assert second["text:minilm.encoded"] == 0 and second["image:color.encoded"] == 0
    assert second["text:minilm.cached"] == 6
    a, b = load_features(tmp_path / "f1"), load_features(tmp_path / "f2")
    assert all(np.array_equal(a[k].values, b[k].values) for k in a)
    items = pd.read_parquet(catalogue / INGESTED_ITEMS)
    items.loc[2, TEXT] = "A mug of cold brew coffee with ice."
    items.to_parquet(catalogue / INGESTED_ITEMS, index=False)
    third = run_featurize(catalogue, tmp_path / "f3", cfg).metrics
    assert third["text:minilm.encoded"] == 1 and third["text:minilm.cached"] == 5
    assert third["image:color.encoded"] == 0
    c = load_features(tmp_path / "f3")["text:minilm"].values
    assert not np.allclose(c[2], a["text:minilm"].values[2]) and np.array_equal(c[[0, 1, 3, 4, 5]], a["text:minilm"].values[[0, 1, 3, 4, 5]])


def test_corrupt_image_mid_catalogue_is_masked_and_reported(catalogue: Path, tmp_path: Path) -> None:
    (catalogue / "images" / "i3.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)  # item 3 of 6 is corrupt
    cfg = FeaturizeConfig(text_encoders=["none"], image_encoders=["effnet-lite0"], num_workers=2,  # real workers
                          batch_size=2, cache_dir=str(tmp_path / "cache"), quality_k=2)
    metrics = run_featurize(catalogue, tmp_path / "out", cfg).metrics
    fm = load_features(tmp_path / "out")["image:effnet-lite0"]
    assert fm.mask.tolist() == [True, True, False, True, True, False]
    assert metrics["image:effnet-lite0.failed"] == 1
    failures = read_manifest(tmp_path / "out")["features"]["image:effnet-lite0"]["failures"]
    assert failures[0]["item_id"] == "i3" and "unreadable" in failures[0]["reason"]
    assert np.linalg.norm(fm.values[3]) == pytest.approx(1.0, abs=1e-4)  # rows after the bad one are intact


def test_serving_embeds_a_new_item_exactly_like_featurize(catalogue: Path, tmp_path: Path,
                                                         fast_cfg: FeaturizeConfig) -> None:
    out = tmp_path / "features"
    run_featurize(catalogue, out, fast_cfg)
    feats = load_features(out)
    items = pd.read_parquet(catalogue / INGESTED_ITEMS)
    tfidf = get_encoder("tfidf", fast_cfg, state_dir=out / "encoders" / "tfidf")
    assert np.allclose(tfidf.encode_texts([items[TEXT][1]])[0], feats["text:tfidf"].values[1], atol=1e-6)
    color = load_encoder(out / "encoders" / "color", num_workers=0)  # spec + config from the folder
    values, mask = color.encode_images([catalogue / "images" / "i4.jpg"])
    assert mask[0] and np.allclose(values[0], feats["image:color"].values[3], atol=1e-6)


def test_tfidf_refits_only_when_the_corpus_changes(catalogue: Path, tmp_path: Path, fast_cfg: FeaturizeConfig) -> None:
    run_featurize(catalogue, tmp_path / "a", fast_cfg)
    assert run_featurize(catalogue, tmp_path / "b", fast_cfg).metrics["text:tfidf.encoded"] == 0
    items = pd.read_parquet(catalogue / INGESTED_ITEMS)
    items.loc[0, TEXT] = "Something else entirely about tax law."
    items.to_parquet(catalogue / INGESTED_ITEMS, index=False)
    # a new corpus is a new fit, so every row is re-encoded: old rows live in another space
    assert run_featurize(catalogue, tmp_path / "c", fast_cfg).metrics["text:tfidf.encoded"] == 6


def test_vectors_and_text_columns(catalogue: Path, tmp_path: Path, fast_cfg: FeaturizeConfig) -> None:
    vec = tmp_path / "audio.parquet"
    pd.DataFrame({"item_id": ["i6", "i1", "i2", "i3"], "emb": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [np.nan, 1.0]]}).to_parquet(vec)
    cfg = fast_cfg.with_overrides(vector_sources=[f"vectors:{vec}"], text_columns=["title"], image_encoders=["none"])
    run_featurize(catalogue, tmp_path / "out", cfg)  # type: ignore[arg-type]
    feats = load_features(tmp_path / "out")
    assert set(feats) == {"text:tfidf", "vectors:audio"}
    assert feats["vectors:audio"].mask.tolist() == [True, True, False, False, False, True]
    entry = read_manifest(tmp_path / "out")["features"]["vectors:audio"]
    assert entry["nonfinite_examples"] == ["i3"]


def test_missing_ingest_output_is_a_clear_error(tmp_path: Path, fast_cfg: FeaturizeConfig) -> None:
    with pytest.raises(FeaturizeError, match="run `fusionrec ingest"):
        run_featurize(tmp_path, tmp_path / "out", fast_cfg)
    with pytest.raises(FeaturizeError, match="text_columns \\['plot'\\]"):
        pd.DataFrame({"item_id": ["a"], "text": ["x"], "image_path": [None], "has_text": [True],
                      "has_image": [False]}).to_parquet(tmp_path / INGESTED_ITEMS)
        run_featurize(tmp_path, tmp_path / "out", fast_cfg.with_overrides(text_columns=["plot"]))  # type: ignore[arg-type]
