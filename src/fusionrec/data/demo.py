"""`fusionrec demo-data`: a deterministic multi-modal dataset with a known ground truth.

Items are rendered pictures (colour, shape, pattern) with generated descriptions
(category, style, material, and for some items the colour). Users have latent
preferences over those attributes plus a popularity bias; each interaction picks an
item with probability softmax(score / temperature) among the items available at its
time (late items exist only in the last part of the range), and at night (the `hour`
context column) style tastes shift. The taste model is saved under `truth/` and
reloaded with `TasteModel.load(demo_dir)`; everything derives from `cfg.seed`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec import schema
from fusionrec.config import DemoConfig
from fusionrec.data.demo_render import FACTORS, describe, render_image
from fusionrec.data.demo_taste import TRUTH_DIR, TasteModel, is_night
from fusionrec.io import StepResult, write_json

__all__ = ["TasteModel", "generate_items", "generate_tastes", "run_demo_data", "sample_interactions"]

START = 1_700_000_000  # 2023-11-14 UTC: the first possible interaction
STRENGTH = {"colour": 1.2, "shape": 0.7, "pattern": 0.5, "category": 1.0, "style": 0.8, "material": 0.5}
TEMPERATURE = 1.0


def _ids(prefix: str, n: int) -> np.ndarray:
    width = max(5, len(str(n)))
    return np.array([f"{prefix}{k:0{width}d}" for k in range(n)])


def generate_items(cfg: DemoConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Item attributes (value names per factor), latent popularity, late flag, text/image flags."""
    n = cfg.items
    items = pd.DataFrame({"item_id": _ids("i", n)})
    for factor, values in FACTORS.items():
        items[factor] = np.asarray(values, dtype=object)[rng.integers(len(values), size=n)]
    items["popularity"] = rng.normal(0.0, 1.0, n)
    late = np.zeros(n, dtype=bool)
    late[rng.permutation(n)[: int(round(cfg.late_item_share * n))]] = True
    items["late"] = late
    items["colour_in_text"] = rng.random(n) < cfg.colour_in_text_share
    items["has_image"] = rng.random(n) >= cfg.missing_image_share
    return items


def generate_tastes(cfg: DemoConfig, items: pd.DataFrame, rng: np.random.Generator) -> TasteModel:
    """Users' preferences: one favourite value per factor (+2) plus noise, scaled per factor."""
    prefs = {}
    for factor, values in FACTORS.items():
        k = len(values)
        fav = rng.integers(k, size=cfg.users)
        w = rng.normal(0.0, 0.6, (cfg.users, k))
        w[np.arange(cfg.users), fav] += 2.0
        prefs[factor] = w * STRENGTH[factor] * cfg.taste_strength
    night_boost = rng.normal(0.0, 1.0, len(FACTORS["style"])) * cfg.night_strength
    model = TasteModel(
        user_ids=_ids("u", cfg.users), prefs=prefs, attributes=items, pop_weight=cfg.popularity_weight,
        night_boost=night_boost, click_bias=0.0, temperature=TEMPERATURE, shift_factor=cfg.shift_factor,
        shift=cfg.shift,
    )
    # click_prob = 0.5 at the 90th percentile of a random user's scores: ~10% of random pairs are likely clicks
    sample = model.score_matrix(rng.integers(cfg.users, size=min(cfg.users, 200)))
    model.click_bias = float(np.quantile(sample, 0.9))
    return model


def _allocate(total: int, n_users: int, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: long-tailed activity, at least a few each, summing to total."""
    floor = max(1, min(5, total // max(n_users, 1)))
    cap = max(floor, n_items // 2)
    weights = rng.lognormal(0.0, 0.8, n_users)
    counts = np.minimum(cap, floor + np.floor(weights / weights.sum() * (total - floor * n_users))).astype(np.int64)
    order = np.argsort(-weights, kind="stable")
    remainder = total - int(counts.sum())
    while remainder > 0:  # hand out the remainder, heaviest users first
        open_users = order[counts[order] < cap][:remainder]
        if not len(open_users):
            break
        counts[open_users] += 1
        remainder -= len(open_users)
    return counts


def _top_k_rows(keys: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the columns of its k[row] largest finite keys: (rows, cols) of the picks.

    With Gumbel noise added to the scores this samples k items without replacement from
    softmax(scores) (the Gumbel top-k trick), for every row at once.
    """
    kmax = int(k.max()) if len(k) else 0
    if kmax == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    top = np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax]  # (B, kmax), unordered
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), axis=1), 1)
    keep = (np.arange(kmax)[None, :] < k[:, None]) & np.isfinite(np.take_along_axis(keys, top, 1))
    rows = np.broadcast_to(np.arange(len(k))[:, None], top.shape)
    return rows[keep], top[keep]


def _sample_block(model: TasteModel, block: np.ndarray, slots: pd.DataFrame, late_items: np.ndarray,
                  rng: np.random.Generator) -> pd.DataFrame:
    """Items for one block of users: per (user, part of day/time) group, Gumbel top-k picks.

    Groups are processed in a random order per user: the group sampled first gets the pick of
    the items, so a fixed order would make, say, early interactions systematically better liked.
    """
    scores = {night: model.score_matrix(block, night=night) / model.temperature for night in (False, True)}
    per_group = np.zeros((len(block), 4), dtype=np.int64)  # group = 2 * late + night
    np.add.at(per_group, (slots["row"].to_numpy(), slots["group"].to_numpy()), 1)
    order = rng.permuted(np.tile(np.arange(4), (len(block), 1)), axis=1)
    taken = np.zeros(scores[False].shape, dtype=bool)
    picks = []
    for step in range(4):
        group = order[:, step]
        night, late = (group % 2 == 1)[:, None], (group >= 2)[:, None]
        keys = np.where(night, scores[True], scores[False]) + rng.gumbel(size=taken.shape)
        keys[taken | (~late & late_items[None, :])] = -np.inf
        rows, cols = _top_k_rows(keys, per_group[np.arange(len(block)), group])
        taken[rows, cols] = True
        picks.append(pd.DataFrame({"row": rows, "group": group[rows], "i": cols}))
    picked = pd.concat(picks, ignore_index=True)
    picked["rank"] = rng.permutation(len(picked))  # random pairing of a group's items with its times
    picked["rank"] = picked.groupby(["row", "group"])["rank"].rank(method="first").astype(np.int64)
    slots = slots.assign(rank=slots.groupby(["row", "group"])["ts"].rank(method="first").astype(np.int64))
    out = slots.merge(picked, on=["row", "group", "rank"], how="inner")  # a group short of items drops slots
    return pd.DataFrame({"u": block[out["row"].to_numpy()], "i": out["i"].to_numpy(), "ts": out["ts"].to_numpy()})


def sample_interactions(cfg: DemoConfig, model: TasteModel, rng: np.random.Generator) -> pd.DataFrame:
    """Interactions over time drawn from the taste model (no user/item pair twice)."""
    span = cfg.days * 86_400
    late_from = START + int(cfg.late_from * span)
    late_items = model.attributes["late"].to_numpy()
    counts = _allocate(cfg.interactions, cfg.users, cfg.items, rng)
    chunk = max(1, 2_000_000 // max(cfg.items, 1))  # (chunk, items) float blocks stay ~16 MB each
    frames = []
    for lo in range(0, cfg.users, chunk):
        block = np.arange(lo, min(lo + chunk, cfg.users))
        row = np.repeat(np.arange(len(block)), counts[block])
        ts = START + rng.integers(0, span, len(row))
        group = 2 * (ts >= late_from) + is_night((ts // 3600) % 24)
        slots = pd.DataFrame({"row": row, "group": group.astype(np.int64), "ts": ts})
        frames.append(_sample_block(model, block, slots, late_items, rng))
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["ts", "u", "i"], kind="stable").reset_index(drop=True)


def _write_items(out_dir: Path, model: TasteModel, cfg: DemoConfig, rng: np.random.Generator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    (out_dir / schema.IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    records = model.attributes.to_dict("records")
    jitter = rng.uniform(-1.0, 1.0, (len(records), 4))
    rows = []
    for rec in records:
        title, overview = describe({f: rec[f] for f in FACTORS}, bool(rec["colour_in_text"]), rng)
        image = f"{schema.IMAGES_DIR}/{rec['item_id']}.jpg" if rec["has_image"] else ""
        rows.append({schema.ITEM_ID: rec["item_id"], "title": title, "genres": f"{rec['category']}|{rec['style']}",
                     "overview": overview, schema.IMAGE: image})

    def draw(k: int) -> None:
        rec = records[k]
        pic = render_image(rec["colour"], rec["shape"], rec["pattern"], cfg.image_size, jitter[k])
        pic.save(out_dir / rows[k][schema.IMAGE], format="JPEG", quality=90)

    with ThreadPoolExecutor(max_workers=4) as pool:  # encoding and file writes release the GIL
        list(pool.map(draw, [k for k, rec in enumerate(records) if rec["has_image"]]))
    pd.DataFrame(rows).to_csv(out_dir / "items.csv", index=False)


def _write_interactions(out_dir: Path, model: TasteModel, inter: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    hour = (inter["ts"].to_numpy() // 3600) % 24
    prob = model.score_pairs(inter["u"].to_numpy(), inter["i"].to_numpy(), night=is_night(hour))
    prob = 1.0 / (1.0 + np.exp(-(prob - model.click_bias)))
    frame = pd.DataFrame({
        schema.USER_ID: model.user_ids[inter["u"].to_numpy()],
        schema.ITEM_ID: model.item_ids[inter["i"].to_numpy()],
        schema.TIMESTAMP: inter["ts"].to_numpy(),
        schema.EVENT: np.where(rng.random(len(inter)) < 0.5 * prob, "like", "click"),
        "hour": hour,
    })
    frame.to_csv(out_dir / "interactions.csv", index=False)
    return frame


def _readme(cfg: DemoConfig, n_inter: int) -> str:
    return (
        "# fusionrec demo dataset (generated)\n\n"
        f"`fusionrec demo-data` with seed {cfg.seed}: {cfg.users} users, {cfg.items} items, {n_inter} interactions.\n"
        "- `items.csv`: item_id, title, genres (category|style), overview, image (`images/<id>.jpg`).\n"
        "- `interactions.csv`: user_id, item_id, timestamp, event (click/like), hour (context).\n"
        "- `truth/`: the ground-truth taste model (`fusionrec.data.demo.TasteModel.load(folder)`).\n"
        "Synthetic data, free to use.\n"
    )


def run_demo_data(out_dir: Path, cfg: DemoConfig) -> StepResult:
    """Generate the demo dataset into out_dir (dataset contract layout plus truth/).

    The same cfg gives byte-identical files; a different seed gives a different dataset.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    items = generate_items(cfg, rng)
    model = generate_tastes(cfg, items, rng)
    inter = sample_interactions(cfg, model, rng)
    frame = _write_interactions(out_dir, model, inter, rng)
    _write_items(out_dir, model, cfg, rng)
    model.save(out_dir / TRUTH_DIR)
    (out_dir / "README.md").write_text(_readme(cfg, len(frame)))
    wall = time.perf_counter() - start
    metrics = {
        "users": int(frame[schema.USER_ID].nunique()), "items": cfg.items, "interactions": len(frame),
        "late_items": int(items["late"].sum()), "images": int(items["has_image"].sum()), "wall_s": round(wall, 3),
    }
    stable = {k: v for k, v in metrics.items() if k != "wall_s"}  # no timings: files stay byte-identical
    write_json(out_dir / TRUTH_DIR / "generation.json", {"config": cfg.model_dump(), **stable})
    return StepResult(metrics=metrics, outputs={"dataset": out_dir, "truth": out_dir / TRUTH_DIR})
