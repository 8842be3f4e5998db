"""The monitor's index.html: the decision at a glance and links to every Evidently report."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from fusionrec.monitoring.decision import DECISION_FILE, Decision

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
    ".yes{color:#b00020;font-weight:bold}.no{color:#0a7d32;font-weight:bold}"
)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def write_index(out_dir: Path, decision: Decision, reports: dict[str, dict[str, str]]) -> Path:
    """Write out_dir/index.html.

    Args:
        decision: the monitor's decision (shown on top, with its reasons).
        reports: check name -> {"html": relative path, "json": relative path, "summary": text,
            "skipped": reason or ""}.
    """
    verdict = "RETRAIN" if decision.retrain else "no retrain"
    rows = []
    for name, rep in reports.items():
        links = " ".join(
            f'<a href="{html.escape(rep[k])}">{k.upper()}</a>' for k in ("html", "json") if rep.get(k)
        )
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{_cell(rep.get('summary', ''))}</td>"
            f"<td>{_cell(rep.get('skipped', '')) or links}</td></tr>"
        )
    reasons = "".join(f"<li><b>{html.escape(r)}</b>: {_cell(decision.detail.get(r, ''))}</li>" for r in decision.reasons)
    signals = ", ".join(f"{html.escape(k)}={'yes' if v else 'no'}" for k, v in decision.signals.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fusionrec monitor</title><style>{_STYLE}</style></head>
<body>
<h1>fusionrec monitor</h1>
<p>Model version: <code>{_cell(decision.model_version)}</code> &middot; status: {_cell(decision.status)}</p>
<p>Decision: <span class="{'yes' if decision.retrain else 'no'}">{verdict}</span>
 (<a href="{DECISION_FILE}">{DECISION_FILE}</a>)</p>
<ul>{reasons or '<li>no retrain reason fired</li>'}</ul>
<p>Signals: {signals or _cell(decision.detail)}</p>
<h2>Reports</h2>
<table><tr><th>check</th><th>summary</th><th>report</th></tr>
{''.join(rows)}
</table>
<details><summary>numbers</summary><pre>{html.escape(json.dumps(decision.numbers, indent=1, default=str))}</pre></details>
</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(page)
    return path
