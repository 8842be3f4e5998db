"""Approximate top-k for known users on large catalogues: inverted-file indexes built with the model.

A known user's scores are (see `Recommender._combine`), with w the EASE blend (0: off):

    trained item j:    s_j = (1 - w) (q . v_j - mu) / sd + w (e_j - mu_e) / sd_e
    untrained item j:  s_j = (s'_j + (c . x_j + b_j - mu_c) / sd_c) / 2 - cold_offset

with q the user's query vector (request context included), v the item vectors, e the sparse
EASE scores of the user's training history, s'_j the first line's formula, c / x / b the
cold tower's user and item sides, and mu, sd (mu_e, sd_e; mu_c, sd_c) the mean and spread of
the raw scores over the reference items (trained, not in the user's training history).

e is nonzero only on the set E of items the history's sparse EASE rows reach: E is scored
exactly. Every other item has e_j = 0, so its score is a positive affine map of an inner
product: the trained items are a maximum-inner-product search by q, the untrained ones by
the concatenated query [(1 - w) q / 2sd, c / 2sd_c, 1 / 2sd_c] over [v, x, b], both skipping
E and the user's exclusions. E is not always small: a sparse EASE row covers about
ease_topk / ease_head_items of the catalogue, so a history of many head items reaches a good
share of it, and that share is scored exactly. The dense EASE (catalogues far below the
index's threshold) is not supported: see `unusable_reason`.

Each group gets a faiss IVF-Flat index (k-means lists, the `ann_probe` nearest lists scanned
exactly; inner product turned into L2 by one extra coordinate, sqrt(R^2 - |y|^2)). IVF
rather than HNSW: user queries are not items, and on clustered catalogues the HNSW graphs
(faiss's and hnswlib's) missed far more of the top 20 at the same latency and took several
times longer to build (benchmarks/ann.py). The neural and cold moments come from
precomputed sums and second-moment matrices minus the user's history rows; the EASE moments
from E's entries alone (the other reference items add zeros, counted but not read). The
EASE scores are summed as exact scoring sums them (`sparse_row_sum`, one dense pass over the
EASE's items); nothing else touches every item. Candidates are rescored exactly; items added
at runtime (beyond the indexes) are scored exactly and merged. Returned scores equal
`score_users`'s.

Files, in `<model>/ann/`: `warm.faiss`, `cold.faiss` (faiss's own format; no pickle),
`moments.safetensors` and `ann.json` (parameters and a fingerprint of the model's items,
so an index left beside a retrained model is refused, not served).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.config import TrainConfig
from fusionrec.io import read_json, write_json
from fusionrec.models.sparse_ease import sparse_row_sum

log = logging.getLogger(__name__)
ANN_DIR = "ann"
FORMAT = 1
MIN_LIST_ROWS = 39  # faiss's k-means wants this many rows per list
TRAIN_ROWS_PER_LIST = 64  # k-means runs on a sample this many times the lists
BATCH_MAX_BANNED = 4096  # more items banned from a search: a bitmap selector instead of a hash set


def unusable_reason(rec: Any) -> str | None:
    """Why the indexes cannot reproduce this model's scores (None: they can).

    The sparse EASE ("ease_indptr" / "ease_indices" / "ease_data") is blended exactly: the items
    a history reaches are scored exactly, the rest through the indexes. The dense "ease" matrix
    (catalogues up to train.ease_max_items, far below the index's threshold) is not: every item
    may have an EASE score, so a model that blends it is served exactly.
    """
    if rec.ease_blend > 0 and "ease" in rec.arrays:
        return (f"the model blends the dense EASE (weight {rec.ease_blend:.2f}), which the index does not "
                "support; set train.ease_blend: 0, or train.ease_max_items below the catalogue size")
    return None


def fingerprint(rec: Any, n_items: int) -> str:
    """A cheap digest of the first n_items' vectors (a sample of rows) and trained flags."""
    step = max(1, n_items // 4096)
    h = hashlib.sha1(str(n_items).encode())
    h.update(np.ascontiguousarray(rec.arrays["item_vecs"][:n_items:step]).tobytes())
    h.update(np.ascontiguousarray(rec.arrays["trained"][:n_items]).tobytes())
    return h.hexdigest()


class MipsIndex:
    """An IVF-Flat index answering maximum inner product queries over rows y (m, p)."""

    def __init__(self, index: Any, rows: np.ndarray) -> None:
        self.index = index
        self.rows = rows  # (m,) ascending model item index of each indexed row

    @classmethod
    def build(cls, y: np.ndarray, rows: np.ndarray, lists: int, seed: int = 0) -> MipsIndex:
        """Index y (m, p) in `lists` k-means lists (0: 2 sqrt(m)), at most one per MIN_LIST_ROWS rows."""
        import faiss

        y = np.asarray(y, dtype=np.float32)
        norms = np.linalg.norm(y, axis=1)
        pad = np.sqrt(np.maximum(norms.max(initial=0.0) ** 2 - norms**2, 0.0))  # |[y, pad]| = R for every row
        x = np.hstack([y, pad[:, None]]).astype(np.float32)  # (m, p + 1)
        lists = max(1, min(lists or int(2 * np.sqrt(len(x))), len(x) // MIN_LIST_ROWS))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(x.shape[1]), x.shape[1], lists)
        index.cp.seed = seed
        sample = np.random.default_rng(seed).choice(len(x), min(len(x), lists * TRAIN_ROWS_PER_LIST), replace=False)
        index.train(x[np.sort(sample)])
        index.add(x)
        return cls(index, rows.astype(np.int64))

    def search(self, w: np.ndarray, k: int, probe: int, banned: np.ndarray) -> np.ndarray:
        """Model item indices of (about) the k rows with the largest w . y, skipping `banned` items.

        Args:
            w: (p,) the query; probe: how many lists are scanned.
            banned: model item indices never to return (the user's exclusions).
        """
        import faiss

        k = min(k, len(self.rows))
        if k <= 0:
            return np.zeros(0, np.int64)
        params = faiss.SearchParametersIVF()
        params.nprobe = min(probe, self.index.nlist)
        keep = self._selector(banned)  # skipped inside the search, so k results remain after the exclusions
        if keep is not None:
            params.sel = keep[0]
        query = np.zeros((1, self.index.d), np.float32)
        query[0, :-1] = w
        _, found = self.index.search(query, k, params=params)
        found = found[0]
        return self.rows[found[found >= 0]]

    def _selector(self, banned: np.ndarray) -> tuple[Any, ...] | None:
        """A faiss selector of the rows not banned, and what it points to (keep all alive while searching).

        A few banned items (the user's exclusions): a hash set of their rows. Many (the items a sparse
        EASE reaches, up to a good share of the catalogue): a bitmap of the allowed rows, built in
        numpy, since a hash set of hundreds of thousands of ids costs more than the search.
        """
        import faiss

        if len(banned) == 0:
            return None
        if len(banned) <= BATCH_MAX_BANNED:
            pos = np.searchsorted(self.rows, banned)
            pos = pos[(pos < len(self.rows)) & (self.rows[np.minimum(pos, len(self.rows) - 1)] == banned)]
            if not len(pos):
                return None
            batch = faiss.IDSelectorBatch(pos.astype(np.int64))
            return faiss.IDSelectorNot(batch), batch
        last = int(self.rows[-1])
        is_banned = np.zeros(last + 1, bool)  # by model item index
        is_banned[banned[banned <= last]] = True
        bits = np.packbits(~is_banned[self.rows], bitorder="little")  # faiss reads bit i of byte i >> 3
        return faiss.IDSelectorBitmap(len(self.rows), faiss.swig_ptr(bits)), bits


@dataclass
class AnnIndex:
    """The indexes and reference moments of one model (see the module doc)."""

    warm: MipsIndex  # trained items, searched by q
    cold: MipsIndex | None  # base items never trained, searched by the concatenated query
    moments: dict[str, np.ndarray]  # float64: n_sum (D,), n_gram (D, D) [, c_sum, c_gram over [x, 1]]
    n_items: int  # the model's items when built; later ones are scored exactly
    probe: int  # lists scanned per query
    meta: dict[str, Any]

    @property
    def n_trained(self) -> int:
        return len(self.warm.rows)


def build_index(rec: Any, cfg: TrainConfig) -> AnnIndex:
    """Build the indexes and moments of a Recommender (no dense EASE blend: see `unusable_reason`)."""
    reason = unusable_reason(rec)
    if reason is not None:
        raise ValueError(f"cannot build an approximate index: {reason}")
    t0 = time.perf_counter()
    a, n = rec.arrays, rec.n_items
    trained = a["trained"][:n].astype(bool)
    warm_rows, cold_rows = np.flatnonzero(trained), np.flatnonzero(~trained)
    v = a["item_vecs"][warm_rows].astype(np.float64)  # (m, D)
    moments = {"n_sum": v.sum(0), "n_gram": v.T @ v}  # (D,), (D, D)
    if "cold_item" in a:
        x = _cold_side(a, warm_rows).astype(np.float64)  # (m, C + 1): [x, b]
        moments.update(c_sum=x.sum(0), c_gram=x.T @ x)
    del v
    warm = MipsIndex.build(a["item_vecs"][warm_rows], warm_rows, cfg.ann_lists, cfg.seed)
    cold = None
    if len(cold_rows):
        y = a["item_vecs"][cold_rows]
        if "cold_item" in a:
            y = np.hstack([y, _cold_side(a, cold_rows)])  # (c, D + C + 1)
        cold = MipsIndex.build(y, cold_rows, cfg.ann_lists, cfg.seed)
    meta = {"format": FORMAT, "backend": "faiss-ivf-flat", "n_items": n, "n_trained": len(warm_rows),
            "lists": int(warm.index.nlist), "cold_lists": int(cold.index.nlist) if cold else 0,
            "probe": cfg.ann_probe, "fingerprint": fingerprint(rec, n),
            "build_seconds": round(time.perf_counter() - t0, 2)}
    return AnnIndex(warm, cold, moments, n, cfg.ann_probe, meta)


def _cold_side(a: dict[str, np.ndarray], rows: np.ndarray | slice) -> np.ndarray:
    """[cold_item, cold_bias] rows: (r, C + 1)."""
    return np.hstack([a["cold_item"][rows], a["cold_bias"][rows][:, None]]).astype(np.float32)


def save_index(index: AnnIndex, folder: Path) -> Path:
    """Write the indexes, moments and ann.json into folder (replacing what was there)."""
    import faiss
    from safetensors.numpy import save_file

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    faiss.write_index(index.warm.index, str(folder / "warm.faiss"))
    rows = {"warm_rows": index.warm.rows}
    if index.cold is not None:
        faiss.write_index(index.cold.index, str(folder / "cold.faiss"))
        rows["cold_rows"] = index.cold.rows
    save_file({**index.moments, **rows}, str(folder / "moments.safetensors"))
    write_json(folder / "ann.json", index.meta)  # last: a folder without it is incomplete
    return folder


def load_index(model_dir: Path, rec: Any) -> AnnIndex | None:
    """The index in `<model_dir>/ann/` when it matches rec; None (logged) when absent or stale.

    Read into memory: a memory-mapped IVF index answered 20-30x slower (page faults on every list
    scanned), and reading it costs well under a second at 1M items (benchmarks/ann.py).
    """
    import faiss
    from safetensors.numpy import load_file

    folder = Path(model_dir) / ANN_DIR
    if not (folder / "ann.json").is_file():
        return None
    meta = read_json(folder / "ann.json")
    n = int(meta.get("n_items", -1))
    problem = unusable_reason(rec)
    if meta.get("format") != FORMAT:
        problem = f"format {meta.get('format')} is not {FORMAT}"
    elif n > rec.n_items or meta.get("fingerprint") != fingerprint(rec, n):
        problem = "it was built for other item vectors (rebuild it with `fusionrec train`)"
    if problem is not None:
        log.warning("%s: approximate index not used, scoring exactly: %s", folder, problem)
        return None
    tensors = load_file(str(folder / "moments.safetensors"))
    warm = MipsIndex(faiss.read_index(str(folder / "warm.faiss")), tensors.pop("warm_rows"))
    cold = None
    if "cold_rows" in tensors:
        cold = MipsIndex(faiss.read_index(str(folder / "cold.faiss")), tensors.pop("cold_rows"))
    return AnnIndex(warm, cold, tensors, n, int(meta["probe"]), meta)


def build_for_model(rec: Any, model_dir: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Build and save the index beside a saved model when its catalogue reaches cfg.ann_min_items.

    Returns:
        the index's ann.json ({} when none was built: catalogue too small, or dense EASE blended).
    """
    folder = Path(model_dir) / ANN_DIR
    if folder.exists():  # whatever was there belongs to an older model
        shutil.rmtree(folder)
    if cfg.ann_min_items <= 0 or rec.n_items < cfg.ann_min_items:
        return {}
    reason = unusable_reason(rec)
    if reason is not None:
        log.warning("%d items, but no approximate index: %s", rec.n_items, reason)
        return {}
    index = build_index(rec, cfg)
    save_index(index, folder)
    log.info("approximate index: %d items in %.1fs", rec.n_items, index.meta["build_seconds"])
    return index.meta


# --- the known-user path -------------------------------------------------------------------
def _moments(total: np.ndarray, gram: np.ndarray, w: np.ndarray, hist_rows: np.ndarray, count: int
             ) -> tuple[float, float]:
    """Mean and std of w . y over the reference rows: all rows (sum, gram) minus the history's."""
    s_hist = hist_rows @ w  # (h, p) x (p,) -> (h,)
    cnt = max(count - len(s_hist), 1)
    mu = (float(w @ total) - float(s_hist.sum())) / cnt
    second = (float(w @ gram @ w) - float(s_hist @ s_hist)) / cnt
    sd = float(np.sqrt(max(second - mu * mu, 0.0)))
    return mu, sd if sd > 1e-12 else 1.0


def _train_history(rec: Any, uidx: int) -> np.ndarray:
    """The user's training-history items that are trained: the ones taken out of the reference set."""
    a = rec.arrays
    lo, hi = a["hist_indptr"][uidx], a["hist_indptr"][uidx + 1]
    items = np.unique(a["hist_indices"][lo:hi].astype(np.int64))
    return items[a["trained"][items].astype(bool)]


@dataclass
class _EasePart:
    """A user's sparse EASE scores, as exact scoring computes them, and their reference moments."""

    dense: np.ndarray  # (n_e,) float32: the EASE score of every item the EASE was trained on
    items: np.ndarray  # (r,) ascending: the items with a nonzero score (E in the module doc)
    weight: float  # the blend w
    mu: float
    sd: float


def _ease_part(rec: Any, uidx: int, ref_count: int) -> _EasePart | None:
    """The user's sparse EASE part (None: the model does not blend it).

    Args:
        ref_count: how many reference items (trained, not in the training history) there are;
            the ones outside E have EASE score 0 and count towards the moments only.
    """
    if not rec.blends_ease:
        return None
    a = rec.arrays
    if "ease" in a:
        raise ValueError(f"cannot serve through the approximate index: {unusable_reason(rec)}")
    lo, hi = a["hist_indptr"][uidx], a["hist_indptr"][uidx + 1]
    hist = a["hist_indices"][lo:hi]
    weights = a["hist_data"][lo:hi] if "hist_data" in a else np.ones(len(hist), np.float32)
    dense = sparse_row_sum(a["ease_indptr"], a["ease_indices"], a["ease_data"], hist, weights)  # (n_e,)
    items = np.flatnonzero(dense)
    ref = a["trained"][items].astype(bool) & ~np.isin(items, hist)
    e = dense[items[ref]].astype(np.float64)  # (r_ref,): the nonzero reference scores
    mu = float(e.sum()) / ref_count
    sd = float(np.sqrt(max(float(e @ e) / ref_count - mu * mu, 0.0)))
    return _EasePart(dense, items, rec.ease_blend, mu, sd if sd > 1e-12 else 1.0)


def user_top_k(rec: Any, index: AnnIndex, uidx: int, k: int, exclude: np.ndarray,
               context: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The k best items of a known user through the index, best first, and their scores.

    Same result as `top_k(rec.score_users([uidx], context)[0], k, exclude)` up to the indexes'
    recall, with the same scores. With the sparse EASE blended, the items it scores are scored
    exactly and the indexes search the others (see the module doc).

    Args:
        rec: the snapshot's Recommender (items added at runtime included); index: its index.
        uidx: the dense user index; k: how many items.
        exclude: item indices never returned (seen items, recent items).
        context: the request context frame (one row) or None, as for `score_users`.

    Returns:
        (item indices (<= k,) int64, scores (<= k,) float32).
    """
    a, n = rec.arrays, rec.n_items
    exclude = np.unique(np.asarray(exclude, dtype=np.int64))
    q = rec.user_matrix(np.array([uidx]), rec._context(context))[0]  # (D,): as score_users builds it
    q64 = q.astype(np.float64)
    hist = _train_history(rec, uidx)
    mu, sd = _moments(index.moments["n_sum"], index.moments["n_gram"], q64,
                      a["item_vecs"][hist].astype(np.float64), index.n_trained)
    ease = _ease_part(rec, uidx, max(index.n_trained - len(hist), 1))
    w_e = ease.weight if ease is not None else 0.0
    exact = np.zeros(0, np.int64) if ease is None else ease.items[ease.items < index.n_items]
    banned = np.concatenate([exclude, exact])  # the searches return k items outside E and the exclusions

    cand = [index.warm.search(q, k, index.probe, banned)]
    tail = np.arange(index.n_items, n)  # items added at runtime: scored exactly
    cold_user = a["cold_user"][uidx].astype(np.float64) if "cold_user" in a else None
    blend = cold_user is not None and "cold_item" in a
    mu_c = sd_c = 0.0
    if blend:
        assert cold_user is not None
        c1 = np.append(cold_user, 1.0)  # (C + 1,): against [x, b]
        mu_c, sd_c = _moments(index.moments["c_sum"], index.moments["c_gram"], c1,
                              _cold_side(a, hist).astype(np.float64), index.n_trained)
    if index.cold is not None:
        w = (1 - w_e) * q64 / (2 * sd)  # outside E the EASE term is a constant
        if blend:
            w = np.concatenate([w, c1 / (2 * sd_c)])  # (D + C + 1,)
        cand.append(index.cold.search(w.astype(np.float32), k, index.probe, banned))
    items = np.concatenate([*cand, tail, exact])
    items = items[~np.isin(items, exclude)]
    scores = (a["item_vecs"][items] @ q - mu) / sd  # (r, D) x (D,) -> (r,)
    if ease is not None:
        e = np.zeros(len(items), np.float32)  # items added after training have no EASE column
        inside = items < len(ease.dense)
        e[inside] = ease.dense[items[inside]]
        scores = (1 - w_e) * scores + w_e * (e - ease.mu) / ease.sd
    cold = ~a["trained"][items].astype(bool)
    if blend and cold.any():
        assert cold_user is not None
        raw = a["cold_item"][items[cold]] @ cold_user + a["cold_bias"][items[cold]]
        scores[cold] = 0.5 * (scores[cold] + (raw - mu_c) / sd_c) - rec.config.cold_offset
    scores = scores.astype(np.float32)
    if len(scores) > k:  # the items E holds can be many: only the best k are sorted
        best = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.zeros(0, np.int64)
        items, scores = items[best], scores[best]
    order = np.argsort(-scores, kind="stable")
    return items[order], scores[order]
