"""The one way a benchmark writes its results: `write_report(name, data, markdown)`.

Every report gets the same envelope (name, when, where it ran), so the README tables and
CI artefacts can be regenerated from the JSON files alone.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from fusionrec import __version__
from fusionrec.io import write_json

REPORTS = Path(__file__).resolve().parent / "reports"


def machine() -> dict[str, Any]:
    """Where the numbers were measured (they mean little without it)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # a shared machine inflates wall times
    }


def write_report(name: str, data: dict[str, Any], markdown: str, out_dir: Path | None = None) -> dict[str, Path]:
    """Write `<name>.json` (data plus an envelope) and `<name>.md` (markdown plus a footer).

    Args:
        name: file stem, e.g. "ingest" -> reports/ingest.json and reports/ingest.md.
        data: the measured numbers (JSON-serialisable).
        markdown: a human summary, usually a table, pasted as-is into the README when useful.
        out_dir: where to write; default benchmarks/reports/.

    Returns:
        {"json": path, "markdown": path}
    """
    out = Path(out_dir) if out_dir is not None else REPORTS
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    where = machine()
    envelope = {"name": name, "fusionrec": __version__, "measured_at": stamp, "machine": where, "data": data}
    json_path = write_json(out / f"{name}.json", envelope)
    footer = (f"\n\n_fusionrec {__version__}, measured {stamp} on {where['cpu_count']} CPU(s), "
              f"Python {where['python']}, load average {where['load_average_1m']}._\n")
    md_path = out / f"{name}.md"
    md_path.write_text(markdown.rstrip() + footer)
    return {"json": json_path, "markdown": md_path}
