"""The framework's floor: a BentoML service that does nothing but answer like fusionrec.

`/recommend` takes the same arguments as fusionrec's and returns a response of the same
shape (k items with ids, titles, scores, positions and explanations), built once and encoded
per request the way fusionrec encodes its answers (orjson, sent as a Response). Served with the
same worker settings, whatever it cannot answer per second is BentoML's own cost: the serving
benchmark measures it in the same run as the real service, side by side. `/recommend_dict`
returns the same dict through BentoML's own encoding (the idiomatic service, and what fusionrec
did before it encoded its own answers).

    bentoml serve benchmarks.floor_service:Floor --host 127.0.0.1 --port 3001
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import orjson
from serving.options import service_options
from starlette.responses import Response

from fusionrec.config import load_params

_serve_cfg = load_params(os.environ.get("FUSIONREC_PARAMS", "params.yaml")).serve


def canned_response(user_id: str, k: int) -> dict[str, Any]:
    """A response shaped like fusionrec's for a known user with explanations."""
    items = [{"item_id": f"i{n:05d}", "title": f"An item title of typical length {n}", "score": 1.0 - n / 100,
              "position": n,
              "explanation": {"top_modality": "text:minilm",
                              "modality_similarity": {"text:minilm": 0.8123, "image:effnet-lite0": 0.4567},
                              "closest_history_item": {"item_id": "i00042", "title": "A history item title",
                                                       "similarity": 0.7345}}}
             for n in range(k)]
    return {"request_id": "0" * 32, "user_id": user_id, "path": "user", "fallback_reason": None,
            "model_version": "floor", "items": items, "ignored_items": []}


@bentoml.service(name="fusionrec-floor", **service_options(_serve_cfg))
class Floor:
    """Answers /recommend with a canned response of fusionrec's shape."""

    def __init__(self) -> None:
        self.responses = {k: canned_response("", k) for k in range(1, _serve_cfg.max_k + 1)}

    @bentoml.api
    async def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True,
                        recent_items: list[str] | None = None, context: dict[str, Any] | None = None,
                        explain: bool = True) -> dict[str, Any]:
        """The canned response for k items, encoded as fusionrec encodes its own."""
        body = {**self.responses[min(max(k, 1), _serve_cfg.max_k)], "user_id": user_id}
        return Response(orjson.dumps(body), media_type="application/json")  # type: ignore[return-value]

    @bentoml.api
    async def recommend_dict(self, user_id: str, k: int = 10, exclude_seen: bool = True,
                             recent_items: list[str] | None = None, context: dict[str, Any] | None = None,
                             explain: bool = True) -> dict[str, Any]:
        """The canned response for k items, encoded by BentoML."""
        return {**self.responses[min(max(k, 1), _serve_cfg.max_k)], "user_id": user_id}
