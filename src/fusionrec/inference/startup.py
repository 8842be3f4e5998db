"""What a serving process starts with: config, feedback store, shared state and the model.

The model is the champion the shared state points at when there is one (fetched from the
models root), else the folder the service was given (FUSIONREC_MODEL). A champion that
cannot be loaded is logged and the given folder served instead, so a bad promotion never
keeps replicas from starting; the pointer is not retried until it moves again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fusionrec.config import ServeConfig
from fusionrec.inference.engine import InferenceEngine, Observer, limit_threads
from fusionrec.monitoring.rollout import fetch_model

logger = logging.getLogger(__name__)


def bentoml_home() -> Path:
    """$BENTOML_HOME, else ~/bentoml (as BentoML itself resolves it)."""
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


def default_feedback_url(cfg: ServeConfig) -> str:
    """FUSIONREC_FEEDBACK_URL, else serve.feedback_url, else SQLite in the BentoML home."""
    url = os.environ.get("FUSIONREC_FEEDBACK_URL") or cfg.feedback_url
    if url:
        return url
    return f"sqlite:///{bentoml_home().resolve() / 'feedback.db'}"


def model_cache(cfg: ServeConfig) -> Path:
    """Where champions from an object store are fetched to: serve.model_cache, else $BENTOML_HOME/champions."""
    return Path(cfg.model_cache) if cfg.model_cache else bentoml_home() / "champions"


def build_engine(model_dir: Path | str, params: Path | str | None = None, observer: Observer | None = None,
                 poll: bool = True) -> InferenceEngine:
    """The engine the service runs: config from params.yaml (FUSIONREC_PARAMS), store and shared state
    from the feedback URL, the champion's model when there is one, polling every serve.poll_interval_s.

    Args:
        model_dir: the model served when no champion is set (or it cannot be loaded).
        poll: start the background thread that follows the shared state.
    """
    from fusionrec.config import load_params
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    all_params = load_params(params or os.environ.get("FUSIONREC_PARAMS", "params.yaml"))
    cfg = all_params.serve
    limit_threads(cfg.blas_threads)
    store = FeedbackStore(default_feedback_url(cfg), background_served=True)
    state, cache = ServingState(store), model_cache(cfg)
    champ = state.champion()
    engine = None
    if champ is not None:
        try:
            engine = InferenceEngine(fetch_model(champ.uri, cache), cfg, store, all_params.ingest, observer, state,
                                     cache)
            engine.slot.champion = champ
        except Exception as exc:  # noqa: BLE001  (whatever the champion's files hold: serve the given model)
            logger.error("champion %s (%s) cannot be loaded, serving %s instead: %s", champ.id, champ.uri,
                         model_dir, exc)
    if engine is None:
        engine = InferenceEngine(model_dir, cfg, store, all_params.ingest, observer, state, cache)
        engine.slot.refused = champ.id if champ is not None else None
    if poll:
        engine.start_polling(cfg.poll_interval_s)
    return engine


__all__ = ["build_engine", "default_feedback_url", "model_cache"]
