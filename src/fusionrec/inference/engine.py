"""The serving engine: top-k, fold-in of new users, popularity fallback, new items, feedback.

`InferenceEngine` holds every rule the service applies; `serving/service.py` only maps
HTTP onto it. The model lives in an immutable snapshot that each request reads once, so a
new item (copy-on-write) or a new model version (`reload`) is swapped in atomically while
requests in flight finish on the snapshot they started with. Errors are `ServeError`s with
an HTTP status and the name of the offending field, never a traceback.

With a `ServingState` (the database every replica shares), an added item is stored before it
is acknowledged, items other replicas added are applied by `sync_items`, and `follow_champion`
loads the model the champion pointer names; `poll` does both (a `Poller` thread calls it).
"""

from __future__ import annotations

import hmac
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.config import IngestConfig, ServeConfig
from fusionrec.inference.ann import user_top_k
from fusionrec.inference.checks import (
    EVENTS,
    MAX_CONTEXT_KEYS,
    ServeError,
    check_id,
    check_int,
    check_text,
    check_vectors,
    decode_base64,
    join_text_fields,
    open_image_checked,
    top_k,
)
from fusionrec.inference.explain import explain as explain_items
from fusionrec.inference.explore import Explorer, mark_explored
from fusionrec.inference.slot import ModelSlot
from fusionrec.inference.snapshot import NewItem, Snapshot, model_vectors
from fusionrec.monitoring.state import Champion, ServingState

Observer = Callable[[str, str], None]  # (api, outcome) -> None, e.g. a Prometheus counter


# --- the model snapshot ----------------------------------------------------------------
class InferenceEngine:
    """Every serving rule, over a model folder written by `fusionrec train`.

    Args:
        model_dir: the model folder (or a BentoML model's path, which holds the same files).
        cfg: limits, auth and the feedback store URL.
        store: a FeedbackStore; None disables `feedback` and the served log.
        ingest: how catalogue text columns were joined (add_item joins its fields the same way).
        observer: called as observer(api, outcome) for request counters.
        state: the shared serving state (runtime items, champion pointer) on the store's database;
            None keeps added items in this process only.
        model_cache: where champions named by an object-store URI are fetched to.
    """

    def __init__(self, model_dir: Path | str, cfg: ServeConfig | None = None, store: Any = None,
                 ingest: IngestConfig | None = None, observer: Observer | None = None,
                 state: ServingState | None = None, model_cache: Path | None = None) -> None:
        self.cfg = cfg or ServeConfig()
        self.ingest = ingest or IngestConfig()
        self.store = store
        self.observer = observer
        self.state = state
        self._served: OrderedDict[str, tuple[list[str], list[float]]] = OrderedDict()  # request -> (items, scores)
        self._served_lock = threading.Lock()
        self.resolver: Callable[[str], Path] | None = None  # model tag -> folder (set by the service)
        self.slot = ModelSlot(Path(model_dir), self.cfg, state, model_cache, self._observe)
        self.explorer = Explorer.from_config(self.cfg)  # serve.explore_share of each answer beyond the top-k

    @property
    def snapshot(self) -> Snapshot:
        return self.slot.snapshot

    @property
    def _snap(self) -> Snapshot:  # what every request reads once
        return self.slot.snapshot

    @_snap.setter
    def _snap(self, snap: Snapshot) -> None:
        self.slot.snapshot = snap

    @property
    def champion(self) -> Champion | None:
        """The champion pointer being served (None: the model was given by hand)."""
        return self.slot.champion

    @property
    def ready(self) -> bool:
        """The model is loaded, its read paths have run once and, on a polling replica, its encoders
        have too: requests from now on are answered at full speed (readiness probes ask this)."""
        return self._snap is not None and self.slot.warmed.is_set()

    def _observe(self, api: str, outcome: str) -> None:
        if self.observer is not None:
            self.observer(api, outcome)

    # --- auth ---------------------------------------------------------------------------
    def authorize(self, authorization: str | None) -> None:
        """Check a write request's `Authorization: Bearer <token>` against the env token."""
        expected = os.environ.get(self.cfg.token_env, "")
        if not expected:
            raise ServeError(403, "authorization", f"write endpoints are disabled: set {self.cfg.token_env} "
                             "in the server's environment")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise ServeError(401, "authorization", "missing or wrong bearer token")

    # --- recommend ----------------------------------------------------------------------
    def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True,
                  recent_items: Sequence[str] | None = None, context: Mapping[str, Any] | None = None,
                  explain: bool = True) -> dict[str, Any]:
        """Top-k items for a user: known users by their vector, unknown ones folded in
        from `recent_items`, and popularity when there is nothing to go on. A known user asking
        with the default rules (seen items excluded, no recent items, no context) reads the ranking
        the snapshot keeps for them (`fusionrec.inference.ranking`): the same answer, computed once.

        Returns:
            {request_id, user_id, path ("user" | "fold_in" | "popular"), fallback_reason,
            model_version, items: [{item_id, title, score, position, explanation}], ignored_items}
        """
        user_id = check_id(user_id, "user_id")
        k = check_int(k, "k", 1, self.cfg.max_k)
        recent = self._check_recent(recent_items)
        ctx = self._check_context(context)
        snap = self._snap
        rec, known = snap.rec, [snap.rec.item_index(i) for i in recent]
        hist = np.array([i for i in known if i is not None and i < snap.n_items], dtype=np.int64)
        ignored = [r for r, i in zip(recent, known, strict=True) if i is None or i >= snap.n_items]
        uidx, reason = rec.user_index(user_id), None
        found = None  # (candidates best first, their scores): the user's kept ranking or the approximate index
        pool = self.explorer.pool if self.explorer.active else 0
        if uidx is not None:
            path, history = "user", rec.seen(uidx)
            if len(hist):
                history = np.union1d(history, hist)
            if snap.rankings is not None and exclude_seen and not len(hist) and not ctx \
                    and k + pool <= snap.rankings.depth:  # the default rules: ranked once per snapshot
                found = snap.rankings.get(uidx)
            elif snap.ann is not None:  # a large catalogue: the index's best items, scored as score_users scores them
                found = user_top_k(rec, snap.ann, uidx, k + pool, history if exclude_seen else np.zeros(0, np.int64),
                                   context=self._frame(ctx))
            else:
                scores = rec.score_users(np.array([uidx]), context=self._frame(ctx))[0]
        elif len(hist):
            path, history = "fold_in", hist
            scores = rec.score_histories([hist], context=[ctx] if ctx else None)[0]
        else:
            path, history = "popular", hist
            reason = "no_known_recent_items" if recent else "unknown_user"
            scores = snap.popular_scores()  # built once per snapshot (read-only here)
        if found is not None and not self.explorer.active:  # candidates best first, exclusions applied
            top, top_scores, n_explored = found[0][:k], found[1][:k].tolist(), 0
        elif found is not None:  # choose among the candidates
            cand, cand_scores = found[0][: k + pool], np.asarray(found[1][: k + pool], dtype=np.float32)
            pos, n_explored = self.explorer.top_k(cand_scores, k, np.zeros(0, np.int64), rec.item_vectors()[cand])
            top, top_scores = cand[pos], cand_scores[pos].tolist()
        else:
            scores = np.asarray(scores[: snap.n_items], dtype=np.float32)
            exclude = history if exclude_seen else np.zeros(0, np.int64)
            top, n_explored = self.explorer.top_k(scores, k, exclude, rec.item_vectors())  # share 0: top_k's answer
            top_scores = scores[top].tolist()
        request_id = uuid.uuid4().hex
        top_list = top.tolist()
        top_ids = [rec.item_ids[i] for i in top_list]
        items = [{"item_id": item_id, "title": rec.titles[i], "score": score, "position": p}
                 for p, (item_id, i, score) in enumerate(zip(top_ids, top_list, top_scores, strict=True))]
        if explain:
            for item, expl in zip(items, explain_items(snap, top, history, path, self.cfg.max_recent_items), strict=True):
                item["explanation"] = expl
        explored = mark_explored(items, n_explored) if self.explorer.active else None  # exploration: marks
        self._log_served(request_id, user_id, top_ids, top_scores, snap.version, explored)
        self._observe("recommend", path if reason is None else f"popular:{reason}")
        return {"request_id": request_id, "user_id": user_id, "path": path, "fallback_reason": reason,
                "model_version": snap.version, "items": items, "ignored_items": ignored}

    def _check_recent(self, recent: Sequence[str] | None) -> list[str]:
        if recent is None:
            return []
        if isinstance(recent, str) or not isinstance(recent, Sequence):
            raise ServeError(400, "recent_items", "must be a list of item ids")
        if len(recent) > self.cfg.max_recent_items:
            raise ServeError(413, "recent_items", f"{len(recent)} items > limit {self.cfg.max_recent_items}")
        return [check_id(r, f"recent_items[{n}]") for n, r in enumerate(recent)]

    @staticmethod
    def _check_context(context: Mapping[str, Any] | None) -> dict[str, Any]:
        if context is None:
            return {}
        if not isinstance(context, Mapping) or len(context) > MAX_CONTEXT_KEYS:
            raise ServeError(400, "context", f"must be an object with at most {MAX_CONTEXT_KEYS} keys")
        for key, value in context.items():
            if not isinstance(value, str | int | float | bool) and value is not None:
                raise ServeError(400, f"context.{key}", "must be a string, number, boolean or null")
        return dict(context)

    @staticmethod
    def _frame(ctx: dict[str, Any]) -> Any:
        if not ctx:
            return None
        import pandas as pd

        return pd.DataFrame([ctx])

    def _log_served(self, request_id: str, user_id: str, item_ids: list[str], scores: list[float],
                    version: str, explored: list[bool] | None = None) -> None:
        with self._served_lock:
            self._served[request_id] = (item_ids, scores)
            if len(self._served) > 10_000:
                self._served.popitem(last=False)
        if self.store is not None and item_ids:
            self.store.record_served(request_id, user_id, item_ids, scores, version, explored=explored)

    # --- similar --------------------------------------------------------------------------
    def similar(self, item_id: str, k: int = 10) -> dict[str, Any]:
        """The k items whose final vectors are closest (cosine) to item_id's."""
        item_id = check_id(item_id, "item_id")
        k = check_int(k, "k", 1, self.cfg.max_k)
        snap = self._snap
        idx = snap.rec.item_index(item_id)
        if idx is None or idx >= snap.n_items:
            raise ServeError(404, "item_id", f"unknown item {item_id!r}")
        vecs = snap.rec.item_vectors()[: snap.n_items]
        scores = (vecs @ vecs[idx]) / np.maximum(np.linalg.norm(vecs, axis=1) * np.linalg.norm(vecs[idx]), 1e-12)
        top = top_k(scores.astype(np.float32), k, np.array([idx]))
        self._observe("similar", "ok")
        return {"item_id": item_id, "model_version": snap.version,
                "items": [{"item_id": snap.rec.item_ids[i], "title": snap.rec.titles[i],
                           "score": float(scores[i]), "position": p} for p, i in enumerate(top)]}

    # --- new items ------------------------------------------------------------------------
    def add_item(self, item_id: str, text: str | None = None, fields: Mapping[str, str] | None = None,
                 image: bytes | Path | None = None, image_base64: str | None = None, title: str | None = None,
                 vectors: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
        """Embed a new item with the model's encoders and serve it from the next request on.

        Args:
            text: the item's joined text; or `fields` ({"title": ..., "overview": ...}) joined
                like ingest joined the catalogue's text columns.
            image / image_base64: the encoded image (PNG, JPEG, WebP), size- and pixel-checked.
            vectors: the item's precomputed vectors for the model's `vectors:` modalities
                ({"audio": [...]}), of their dimension, normalised as featurize did.
        """
        item_id = check_id(item_id, "item_id")
        joined = join_text_fields(text, fields, self.ingest, self.cfg.max_text_chars)
        if title is not None:
            title = check_text(title, "title", self.cfg.max_text_chars)
        if image is None and image_base64 is not None:
            image = decode_base64(check_text(image_base64, "image_base64", 10 * self.cfg.max_image_bytes),
                                  "image_base64", self.cfg.max_image_bytes)
        if isinstance(image, Path):  # an upload: check the size before reading it
            if image.stat().st_size > self.cfg.max_image_bytes:
                raise ServeError(413, "image", f"{image.stat().st_size} bytes > limit {self.cfg.max_image_bytes}")
            image = image.read_bytes()
        pil = open_image_checked(self.cfg, image) if image else None
        given = check_vectors(vectors, model_vectors(self.slot.snapshot.rec)) if vectors else {}
        if not joined and pil is None and not given:
            raise ServeError(400, "text", "an item needs text (text or fields), an image or vectors")
        title = title or str((fields or {}).get("title", ""))
        new, present = self.slot.add(NewItem(item_id, joined, pil, title, given), fields, image or None)
        self._observe("add_item", "ok")
        return {"item_id": item_id, "item_idx": new.n_items - 1, "n_items": new.n_items,
                "modalities": present, "model_version": new.version}

    # --- feedback -------------------------------------------------------------------------
    def feedback(self, user_id: str, item_id: str, event: str, request_id: str | None = None) -> dict[str, Any]:
        """Append a feedback event to the store; returns once it is committed."""
        user_id, item_id = check_id(user_id, "user_id"), check_id(item_id, "item_id")
        if event not in EVENTS:
            raise ServeError(400, "event", f"{event!r} is not one of {', '.join(EVENTS)}")
        if request_id is not None:
            request_id = check_id(request_id, "request_id")[:64]
        if self.store is None:
            raise ServeError(503, "feedback", "no feedback store is configured")
        with self._served_lock:
            ids, scores = self._served.get(request_id or "", ([], []))
        position = ids.index(item_id) if item_id in ids else None
        score = scores[position] if position is not None else None
        fid = self.store.append_feedback(user_id, item_id, event, request_id=request_id, position=position,
                                         score=score, model_version=self._snap.version if position is not None else None)
        self._observe("feedback", event)
        return {"id": fid, "stored": True, "request_id": request_id, "position": position}

    # --- model metadata and swaps ---------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """Model version, training time, metrics, data fingerprint and encoders."""
        snap = self._snap
        meta = snap.rec.meta or {}
        return {"model_version": snap.version, "trained_at": meta.get("trained_at"),
                "metrics": meta.get("test_metrics") or meta.get("metrics") or {},
                "valid_metrics": meta.get("valid_metrics") or {}, "data_fingerprint": meta.get("data_fingerprint"),
                "encoders": meta.get("encoders") or {}, "modalities": list(snap.rec.modalities),
                "n_items": snap.n_items, "n_users": snap.rec.n_users,
                "added_items": snap.n_items - snap.base_items,
                "fusion": snap.rec.config.fusion, "model_dir": str(snap.model_dir),
                "champion": self.champion.to_dict() if self.champion is not None else None}

    def reload(self, model: str | Path) -> dict[str, Any]:
        """Load another model version and swap it in atomically; items added at runtime are replayed.

        Args:
            model: a model folder, or whatever `self.resolver` turns into one (a BentoML tag).
        """
        try:
            path = self.resolver(str(model)) if self.resolver is not None else Path(model)
        except Exception:  # the resolver is the adapter's lookup (e.g. BentoML's NotFound)
            raise ServeError(404, "model", f"no model folder or stored model {str(model)!r}") from None
        if not path.is_dir():
            raise ServeError(404, "model", f"no model folder {str(path)!r}")
        old, fresh = self.slot.swap(path)
        self._observe("reload", "ok")
        return {"previous_version": old.version, "model_version": fresh.version, "n_items": fresh.n_items,
                "swapped_at": time.time()}

    def poll(self) -> dict[str, Any]:
        """One look at the shared state: new runtime items, then the champion (see `ModelSlot.poll`)."""
        return self.slot.poll()

    def start_polling(self, interval_s: float) -> None:
        """Follow the shared state every interval_s seconds on a background thread."""
        self.slot.start_polling(interval_s)

    def call(self, api: str, authorization: str | None = None, write: bool = False, **kwargs: Any
             ) -> tuple[int, dict[str, Any]]:
        """Run one API (`recommend`, `similar`, ...) as the HTTP layer needs it: (status, body).

        Write APIs check the bearer token first; a ServeError becomes its 4xx/5xx status and
        a body naming the field; the metrics observer counts every outcome.
        """
        try:
            if write:
                self.authorize(authorization)
            return 200, getattr(self, api)(**kwargs)
        except ServeError as err:
            self._observe(api, f"error:{err.status}")
            return err.status, err.to_dict()

    def close(self) -> None:
        """Stop polling, write the queued served impressions and close the feedback store."""
        self.slot.stop_polling()
        if self.store is not None:
            self.store.close()


def limit_threads(n: int) -> None:
    """Cap BLAS and torch threads in this process (the serving worker).

    Scoring one request is a (1, d) x (d, n_items) product: on a busy machine a
    multi-threaded BLAS spends far longer waking threads than computing (measured 30 ms
    vs 0.4 ms at 20k items on 2 shared cores).
    """
    import threadpoolctl
    import torch

    threadpoolctl.threadpool_limits(limits=n)
    torch.set_num_threads(n)
