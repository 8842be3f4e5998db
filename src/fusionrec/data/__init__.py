"""Data: ingest and validation, splits, the demo generator, and the loaders.

- `ingest.run_ingest`: dataset folder -> ingested folder (catalogue.py checks items, images.py
  guards every image decode, tables.py reads raw tables and collects rejected rows).
- `splits.run_split`: ingested folder -> train/valid/test (random-811, temporal-loo,
  global-time, cold-items, or an external split).
- `demo.run_demo_data`: the generated demo dataset; `demo.TasteModel` is its ground truth.
- `loading.load_ingested` / `loading.load_split`: what every later step reads.

Nothing is imported here, so `import fusionrec.data.images` stays cheap.
"""
