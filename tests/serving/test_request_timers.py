"""BentoML's request timeout, as the service runs it: each request's timer is released when the
request ends (BentoML 1.4 kept every request alive for the whole timeout), and a request that runs
past the timeout is still answered 504."""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http.traffic import TimeoutMiddleware
from serving.options import release_request_timers


def _run(app: Any, timeout: float) -> tuple[list[Any], list[dict[str, Any]]]:
    """Call the middleware once over `app`; returns (the timers it scheduled, the messages it sent)."""
    release_request_timers()
    timers: list[Any] = []
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        call_later = loop.call_later

        def recording(delay: float, callback: Any, *args: Any) -> Any:
            handle = call_later(delay, callback, *args)
            timers.append(handle)
            return handle

        loop.call_later = recording  # type: ignore[method-assign]

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await TimeoutMiddleware(app, timeout)({"type": "http", "path": "/recommend", "headers": []}, receive, send)

    asyncio.run(main())
    return timers, sent


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_finished_request_releases_its_timer() -> None:
    timers, sent = _run(_answer, timeout=60)
    assert len(timers) == 1 and timers[0].cancelled()  # not held for 60 s with the request's context
    assert sent[0]["status"] == 200


def test_a_request_past_the_timeout_is_still_answered_504() -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)
        await _answer(scope, receive, send)

    timers, sent = _run(slow, timeout=0.05)
    assert sent[0]["status"] == 504 and b"0.05 seconds" in sent[1]["body"]
    assert timers[0].cancelled()  # the middleware's own timer (the app's sleep scheduled another)
