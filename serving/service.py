"""BentoML service: HTTP onto `fusionrec.inference.InferenceEngine`, nothing more.

Every rule (limits, fallbacks, explanations, auth, feedback durability) lives in
`fusionrec.inference`; this file maps requests to `engine.call(...)` and its status onto
the response. Endpoints (all POST JSON, port 3000): /recommend, /similar, /add_item,
/add_item_upload (multipart), /feedback, /metadata, /reload; BentoML's own /healthz (= /livez),
/readyz (ready once the model is loaded) and /metrics (Prometheus, incl. fusionrec_requests_total).

Environment: FUSIONREC_MODEL (a model folder or a BentoML tag; default fusionrec:latest; served
until a champion is promoted), FUSIONREC_PARAMS (params.yaml), FUSIONREC_TOKEN (bearer token of
write endpoints), FUSIONREC_FEEDBACK_URL (the database of feedback and of the state every replica
shares: items added at runtime and the champion pointer, followed every serve.poll_interval_s).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any

import bentoml
import orjson
from bentoml.validators import ContentType
from starlette.responses import Response

from fusionrec.config import load_params
from fusionrec.inference import InferenceEngine, build_engine
from serving.middleware import MultipartGuard
from serving.options import service_options

MODEL_SPEC = os.environ.get("FUSIONREC_MODEL", "") or "fusionrec:latest"  # a folder or a BentoML tag
_serve_cfg = load_params(os.environ.get("FUSIONREC_PARAMS", "params.yaml")).serve

requests_total = bentoml.metrics.Counter(
    name="fusionrec_requests",
    documentation="fusionrec API calls by api and outcome (recommend: path and fallback reason)",
    labelnames=["api", "outcome"],
)


@functools.cache
def _counter(api: str, outcome: str) -> Any:
    """The counter child of one (api, outcome): looked up once, not per request."""
    return requests_total.labels(api=api, outcome=outcome)


def _observe(api: str, outcome: str) -> None:
    _counter(api, outcome).inc()


def resolve_model(spec: str) -> Path:
    """A model folder from a path or a BentoML model tag."""
    return Path(spec) if Path(spec).is_dir() else Path(bentoml.models.get(spec).path)


@bentoml.service(name="fusionrec", **service_options(_serve_cfg))
class FusionRec:
    """Recommendations, similar items, new items, feedback and model swaps over one model."""

    if not Path(MODEL_SPEC).is_dir():  # a stored model: `bentoml build` packs it into the bento
        model_ref = bentoml.models.BentoModel(MODEL_SPEC)

    def __init__(self) -> None:
        model_dir = Path(MODEL_SPEC) if Path(MODEL_SPEC).is_dir() else Path(self.model_ref.path)
        self.engine: InferenceEngine = build_engine(model_dir, observer=_observe)
        self.engine.resolver = resolve_model

    def __is_ready__(self) -> bool:
        return self.engine.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Graceful stop: end polling and commit the served impressions still queued."""
        self.engine.close()

    def _reply(self, ctx: bentoml.Context | None, api: str, write: bool = False, **kwargs: Any) -> Any:
        """The engine's answer as a JSON response, encoded here (orjson): BentoML sends a Response as
        it is, where a returned dict would be validated and encoded again through a JSON schema it
        rebuilds for every request. Read APIs pass no context (BentoML then skips copying its headers
        and cookies onto the response); write APIs read the bearer token from it."""
        authorization = ctx.request.headers.get("authorization") if ctx is not None else None
        status, body = self.engine.call(api, authorization, write, **kwargs)
        if ctx is not None:
            ctx.response.status_code = status
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    # recommend and similar only compute (the served log is queued): they run on the event loop, with
    # no hand-off to a thread per request. The write APIs wait on the database: BentoML runs them in threads.
    @bentoml.api
    async def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True,
                        recent_items: list[str] | None = None, context: dict[str, Any] | None = None,
                        explain: bool = True) -> dict[str, Any]:
        """Top-k items with scores, titles, explanations, the path taken and a request_id."""
        return self._reply(None, "recommend", user_id=user_id, k=k, exclude_seen=exclude_seen,
                           recent_items=recent_items, context=context, explain=explain)

    @bentoml.api
    async def similar(self, item_id: str, k: int = 10) -> dict[str, Any]:
        """The k items closest to item_id."""
        return self._reply(None, "similar", item_id=item_id, k=k)

    @bentoml.api
    def add_item(self, ctx: bentoml.Context, item_id: str, text: str | None = None,
                 fields: dict[str, str] | None = None, title: str | None = None,
                 image_base64: str | None = None, vectors: dict[str, list[float]] | None = None) -> dict[str, Any]:
        """Add a new item (text, base64 image and/or precomputed vectors by modality name); served
        from the next request. Needs the token."""
        return self._reply(ctx, "add_item", write=True, item_id=item_id, text=text, fields=fields,
                           title=title, image_base64=image_base64, vectors=vectors)

    @bentoml.api
    def add_item_upload(self, ctx: bentoml.Context, item_id: str, image: Annotated[Path, ContentType("image/*")],
                        text: str | None = None, title: str | None = None) -> dict[str, Any]:
        """Add a new item with its image as a multipart upload. Needs the token."""
        return self._reply(ctx, "add_item", write=True, item_id=item_id, text=text, title=title, image=image)

    @bentoml.api
    def feedback(self, ctx: bentoml.Context, user_id: str, item_id: str, event: str,
                 request_id: str | None = None) -> dict[str, Any]:
        """Append a feedback event; answered after it is committed. Needs the token."""
        return self._reply(ctx, "feedback", write=True, user_id=user_id, item_id=item_id, event=event,
                           request_id=request_id)

    @bentoml.api
    def metadata(self, ctx: bentoml.Context) -> dict[str, Any]:
        """Model version, training time, metrics, data fingerprint, encoders."""
        return self._reply(ctx, "metadata")

    @bentoml.api
    def reload(self, ctx: bentoml.Context, model: str) -> dict[str, Any]:
        """Swap in another model version (folder or BentoML tag) without dropping requests. Needs the token."""
        return self._reply(ctx, "reload", write=True, model=model)


FusionRec.add_asgi_middleware(MultipartGuard, max_bytes=_serve_cfg.max_image_bytes + 1_000_000)  # type: ignore[attr-defined]
