"""The model snapshot one replica serves, and every way it changes.

A `ModelSlot` holds the current `Snapshot` (requests read it once, lock-free) and swaps in a new
one under a lock: an item added here, items other replicas added, a reloaded model, a new
champion. With a `ServingState` (the database every replica shares) an added item is stored
before it is acknowledged, `sync_items` applies the items stored since the last id this replica
saw, and `follow_champion` loads the model the champion pointer names when it moves; a model
swap replays every runtime item onto the new model first. Without one, added items live in
this process and are replayed from memory.

After the model is loaded, its encoders have run, or a model is swapped in, the heap is settled
(`settle_heap`): what is alive then is kept out of the garbage collector's full passes, which
would otherwise walk the libraries' few hundred thousand objects mid-request.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fusionrec.config import ServeConfig
from fusionrec.inference.checks import ServeError, open_image_checked
from fusionrec.inference.poller import Poller
from fusionrec.inference.snapshot import NewItem, Snapshot, warm, with_items
from fusionrec.inference.warmup import warm_reads
from fusionrec.monitoring.rollout import RolloutError, fetch_model, is_remote, prune_cache
from fusionrec.monitoring.state import Champion, ItemExists, RuntimeItem, ServingState, StateError

logger = logging.getLogger(__name__)
REPLAY_PAGE = 256  # runtime items read and embedded at a time


def load_snapshot(model_dir: Path, cfg: ServeConfig | None = None) -> Snapshot:
    """A snapshot of the model folder written by `fusionrec train`, keeping known users' rankings
    as deep as a request can ask (max_k plus the exploration pool) for serve.rank_cache_users users."""
    from fusionrec.models.recommender import Recommender

    cfg = cfg or ServeConfig()
    return Snapshot.build(Recommender.load(model_dir), model_dir, rank_depth=cfg.max_k + cfg.explore_pool,
                          rank_users=cfg.rank_cache_users)


def settle_heap() -> None:
    """Collect garbage once, then move every object alive into the collector's permanent generation.

    A serving worker holds about 300k long-lived objects (torch, transformers, pandas, the model); a
    full collection walks all of them, 190 ms on 2 cores, and holds the interpreter the whole time:
    every request in flight waits, which is what p99 latency under load is made of. Frozen objects are
    still freed by reference counting; only reference cycles among them wait for the next settle.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelSlot:
    """The snapshot a replica serves (see the module doc).

    Args:
        model_dir: the model to start with.
        cfg: the serve limits (an image stored by another replica is decoded under them).
        state: the shared serving state; None keeps added items in this process.
        model_cache: where champions named by an object-store URI are fetched to (default: the temp dir).
        observe: called as observe(api, outcome) when the champion is swapped in or refused.
    """

    def __init__(self, model_dir: Path, cfg: ServeConfig, state: ServingState | None = None,
                 model_cache: Path | None = None, observe: Callable[[str, str], None] | None = None) -> None:
        self.cfg, self.state, self.model_cache = cfg, state, model_cache
        self.observe = observe or (lambda _api, _outcome: None)
        self.champion: Champion | None = None  # the pointer being served (None: a model given by hand)
        self.refused: int | None = None  # a champion id that failed to load: not retried until the pointer moves
        self.lock = threading.Lock()
        self._added: list[tuple[NewItem, bytes | None]] = []  # without a shared state: replayed on a reload
        self._cursor = 0  # with a shared state: the last runtime item id applied
        self._poller: Poller | None = None
        self.warmed = threading.Event()  # cleared while a poller warms the encoders (see start_polling)
        self.warmed.set()
        snap = load_snapshot(Path(model_dir), cfg)
        if state is not None:
            snap, self._cursor = self._with_runtime_items(snap, 0)
        warm_reads(snap, cfg.max_recent_items)  # ready means fast: the first requests find every cache built
        self.snapshot = snap
        settle_heap()

    # --- items -----------------------------------------------------------------------------
    def add(self, item: NewItem, fields: Mapping[str, str] | None, image: bytes | None
            ) -> tuple[Snapshot, dict[str, bool]]:
        """Embed one new item and serve it; with a shared state it is stored (durably) first.

        Raises:
            ServeError: 409 when the id exists (here or on any replica), 503 when it cannot be stored.
        """
        with self.lock:
            snap = self.snapshot
            if snap.rec.item_index(item.item_id) is not None:
                raise ServeError(409, "item_id", f"item {item.item_id!r} already exists")
            new, (present,) = with_items(snap, [item])
            if self.state is not None:
                try:
                    self.state.add_item(item.item_id, item.title, item.text, dict(fields) if fields else None, image,
                                        item.vectors or None)
                except ItemExists as exc:
                    raise ServeError(409, "item_id", str(exc)) from None
                except StateError as exc:
                    raise ServeError(503, "item_id", f"not stored, try again: {exc}") from None
            else:
                self._added.append((NewItem(item.item_id, item.text, None, item.title, item.vectors), image))
            self.snapshot = new
        return new, present

    def _with_runtime_items(self, snap: Snapshot, after: int) -> tuple[Snapshot, int]:
        """`snap` plus the runtime items with an id above `after` that it lacks; and the last id read.

        Read and embedded a page at a time, so replaying a large catalogue of added items (images
        included) never holds more than one page of their content in memory.
        """
        assert self.state is not None
        while rows := self.state.items_since(after, limit=REPLAY_PAGE):
            snap, _ = with_items(snap, [self._decoded(r) for r in rows if snap.rec.item_index(r.item_id) is None])
            after = rows[-1].id
            if len(rows) < REPLAY_PAGE:
                break
        return snap, after

    def _decoded(self, item: RuntimeItem) -> NewItem:
        pil = None
        if item.image:
            try:
                pil = open_image_checked(self.cfg, item.image)
            except ServeError as err:  # stored under other limits: served by its text, image masked
                logger.warning("runtime item %r: image not used (%s)", item.item_id, err.message)
        return NewItem(item.item_id, item.text, pil, item.title, item.vectors or {})

    def sync_items(self) -> int:
        """Serve the items added on any replica since the last call; returns how many were new here."""
        if self.state is None:
            return 0
        with self.lock:
            before = self.snapshot.n_items
            self.snapshot, self._cursor = self._with_runtime_items(self.snapshot, self._cursor)
            return self.snapshot.n_items - before

    # --- models ----------------------------------------------------------------------------
    def swap(self, path: Path) -> tuple[Snapshot, Snapshot]:
        """Load a model folder, replay the runtime items onto it, serve it: (old, new) snapshots.

        The load and the bulk of the replay run outside the lock; under it only the items added
        meanwhile are applied, so requests never wait and no item is lost.
        """
        try:
            fresh = load_snapshot(path, self.cfg)
        except (OSError, ValueError) as exc:
            raise ServeError(400, "model", f"cannot load {path}: {exc}") from None
        warm(fresh)
        warm_reads(fresh, self.cfg.max_recent_items)
        seen = 0
        if self.state is not None:
            fresh, seen = self._with_runtime_items(fresh, 0)
        with self.lock:
            if self.state is not None:
                fresh, self._cursor = self._with_runtime_items(fresh, seen)
            else:
                fresh, _ = with_items(fresh, [
                    NewItem(it.item_id, it.text, open_image_checked(self.cfg, image) if image else None, it.title,
                            it.vectors)
                    for it, image in self._added if fresh.rec.item_index(it.item_id) is None])
            old, self.snapshot = self.snapshot, fresh
        settle_heap()  # the old model's cycles are collected, the new one's objects settled
        return old, fresh

    def follow_champion(self) -> Champion | None:
        """Load the model the champion pointer names, when it moved; returns the new pointer or None.

        A champion that cannot be fetched or loaded is logged and skipped until the pointer moves
        again: the replica keeps serving what it has. After a swap to a model fetched from an object
        store, the cache keeps the new and the previous model only.
        """
        champ = self.state.champion() if self.state is not None else None
        if champ is None or champ.id == self.refused or (self.champion is not None and champ.id == self.champion.id):
            return None
        try:
            cache = self.model_cache or Path(tempfile.gettempdir()) / "fusionrec-champions"
            old, new = self.swap(fetch_model(champ.uri, cache))
        except (RolloutError, ServeError) as exc:
            self.refused = champ.id
            self.observe("champion", "refused")
            logger.error("champion %s (%s) not loaded, still serving %s: %s", champ.id, champ.uri,
                         self.snapshot.version, exc)
            return None
        self.champion = champ
        self.observe("champion", "swapped")
        logger.info("champion %s: serving %s (was %s)", champ.id, new.version, old.version)
        if is_remote(champ.uri):  # fetched copies pile up in the cache: keep the two this replica just held
            try:
                prune_cache(cache, [new.model_dir, old.model_dir])
            except OSError as exc:
                logger.warning("old champions in %s not deleted: %s", cache, exc)
        return champ

    # --- polling ---------------------------------------------------------------------------
    def poll(self) -> dict[str, Any]:
        """One look at the shared state: apply new runtime items, then follow the champion."""
        added = self.sync_items()
        moved = self.follow_champion()
        return {"items": added, "champion": moved.to_dict() if moved is not None else None}

    def start_polling(self, interval_s: float) -> None:
        """Call `poll` every interval_s seconds on a background thread (no-op without a shared state)."""
        if self.state is not None and interval_s > 0 and self._poller is None:
            self.warmed.clear()
            self._poller = Poller(self.poll, interval_s, first=self._warm_encoders)
            self._poller.start()

    def _warm_encoders(self) -> None:
        """Load and run the encoders once (seconds for MiniLM and EffNet-Lite0). Until this is done the
        replica is not ready: the loading holds the interpreter, and requests would wait on it."""
        try:
            warm(self.snapshot)
            settle_heap()  # the encoders' libraries were imported just now
        finally:
            self.warmed.set()

    def stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
