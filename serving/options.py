"""BentoML settings of the fusionrec service, in one place: the benchmarks' floor service uses the
same, so that the two differ only in what their APIs do.

`service_options` also mends BentoML 1.4's request timeout (`release_request_timers`): its
TimeoutMiddleware schedules a timer per request and never cancels it, so every answered request
(its context, its tracing span, its response waiter) stays alive until the timer fires, 60 s
later. At 500 requests/s that is 30,000 requests held, which every full garbage collection then
walks: pauses of 100-300 ms that became the service's p99.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fusionrec.config import ServeConfig

QUIET_PATHS = ["/healthz", "/livez", "/readyz", "/metrics"]  # never in the access log


def release_request_timers() -> None:
    """Make BentoML's TimeoutMiddleware cancel each request's timer once the request is over.

    Same behaviour otherwise: a request still running after the timeout is cancelled and answered
    504. Applied once per process (idempotent).
    """
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    if getattr(TimeoutMiddleware, "_fusionrec_releases_timers", False):
        return

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                from starlette.responses import JSONResponse

                resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                    status_code=504)
                await resp(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()  # what BentoML leaves out: the request is released now, not `timeout` seconds later
        return None

    TimeoutMiddleware.__call__ = call  # type: ignore[method-assign]
    TimeoutMiddleware._fusionrec_releases_timers = True  # type: ignore[attr-defined]


def service_options(cfg: ServeConfig) -> dict[str, Any]:
    """Keyword arguments of `bentoml.service` (workers, request threads, timeout, port, access log);
    also releases each request's timeout timer when it ends (`release_request_timers`)."""
    release_request_timers()
    return {"workers": cfg.workers, "threads": cfg.threads, "traffic": {"timeout": 60}, "http": {"port": cfg.port},
            "logging": {"access": {"enabled": cfg.access_log, "skip_paths": QUIET_PATHS}}}
