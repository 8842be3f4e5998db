"""BentoML settings of the fusionrec service, in one place: the benchmarks' floor service uses the
same, so that the two differ only in what their APIs do."""

from __future__ import annotations

from typing import Any

from fusionrec.config import ServeConfig

QUIET_PATHS = ["/healthz", "/livez", "/readyz", "/metrics"]  # never in the access log


def service_options(cfg: ServeConfig) -> dict[str, Any]:
    """Keyword arguments of `bentoml.service` (workers, request threads, timeout, port, access log)."""
    return {"workers": cfg.workers, "threads": cfg.threads, "traffic": {"timeout": 60}, "http": {"port": cfg.port},
            "logging": {"access": {"enabled": cfg.access_log, "skip_paths": QUIET_PATHS}}}
