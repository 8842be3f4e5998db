"""Item features: frozen text and image encoders, a registry, a content-hash cache, featurize.

Public API (see docs/CONTRACTS.md):
- `fusionrec.features.registry.get_encoder(spec, cfg, state_dir=None) -> Encoder`
  (`encode_texts`, `encode_images`, `dim`, `version`, `modality`);
- `fusionrec.features.store.load_features(dir) -> dict[str, FeatureMatrix]`;
- `fusionrec.features.pipeline.run_featurize(ingested_dir, out_dir, cfg) -> StepResult`.
Importing this package loads no model and does not import torch.
"""
