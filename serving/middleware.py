"""HTTP plumbing BentoML lacks: a malformed or oversized multipart body gets a 4xx, not a 500.

BentoML 1.4 turns Starlette's "Invalid multipart data" (an HTTP 400) into a 500, and reads
an upload of any size to disk before the API sees it. This ASGI middleware reads multipart
bodies first (up to a byte limit), answers 413 / 400 itself, and replays a valid body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class MultipartGuard:
    """Pre-check multipart/form-data requests: size limit, then a full parse."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reply(self, send: Send, status: int, message: str) -> None:
        body = json.dumps({"error": message, "field": "body", "status": status}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = next((v for k, v in scope.get("headers") or () if k == b"content-type"), b"") \
            if scope["type"] == "http" else b""
        if b"multipart/form-data" not in content_type:
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reply(send, 413, f"body: request larger than {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        from starlette.exceptions import HTTPException
        from starlette.requests import Request

        try:
            form = await Request(scope, replay).form()
            await form.close()
        except (HTTPException, ValueError, KeyError) as exc:
            await self._reply(send, 400, f"body: not valid multipart/form-data ({getattr(exc, 'detail', exc)})")
            return
        sent = False

        async def receive_again() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return await replay()
            return await receive()

        await self.app(scope, receive_again, send)
