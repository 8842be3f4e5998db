"""The monitor's history: a dated folder per run, a line per run, and a page with the trend.

Layout of the reports folder (`fusionrec monitor --out`, the reports volume on Kubernetes):

    index.html            the trend (feedback drift share, click-through, retrain decisions) and
                          a table of every run, newest first, linking each run's own page
    trend.png             the plot on that page
    history.jsonl         one JSON line per run (what the page shows), appended by every run
    runs/<UTC time>/      one run: decision.json, index.html, reports/*.json|html
    state/                what runs hand on: drift streak, window marks, the pinned reference
    retrain/              retraining records (runs.jsonl, runs/<stamp>/record.json)

Evidently's HTML reports carry their whole JavaScript bundle (about 4 MB each), so the HTML of
runs older than `monitor.report_html_days` is deleted; their JSON reports, decision and page stay.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fusionrec.monitoring.decision import DECISION_FILE, Decision

RUNS_DIR = "runs"
STATE_DIR = "state"
HISTORY_FILE = "history.jsonl"
TREND_FILE = "trend.png"
INDEX_FILE = "index.html"
STAMP = "%Y-%m-%dT%H-%M-%SZ"  # a run folder's name: its UTC start, sortable and safe in URLs

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}"
    ".yes{color:#b00020;font-weight:bold}.no{color:#0a7d32}"
)


def run_folder(root: Path, started: float) -> Path:
    """A new folder runs/<UTC start>/ under root (a suffix when two runs start in the same second)."""
    base = Path(root) / RUNS_DIR / time.strftime(STAMP, time.gmtime(started))
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder


def entry(root: Path, run_dir: Path, decision: Decision, started: float) -> dict[str, Any]:
    """The history line of one run: when, which model, the decision and the numbers of the trend."""
    fb = decision.numbers.get("feedback", {})
    streak = decision.numbers.get("persistence", {})
    windows = decision.numbers.get("windows", {})
    return {
        "run": Path(run_dir).relative_to(root).as_posix(),
        "started": started,
        "at": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(started)),
        "model_version": decision.model_version,
        "status": decision.status,
        "retrain": decision.retrain,
        "reasons": decision.reasons,
        "drift_share": fb.get("share"),
        "drift_share_threshold": fb.get("drift_share_threshold"),
        "ctr_reference": fb.get("ctr_reference"),
        "ctr_current": fb.get("ctr_current"),
        "streak": streak.get("streak"),
        "streak_needed": streak.get("needed"),
        "current_events": windows.get("current_events"),
        "served_dropped": decision.numbers.get("retention", {}).get("served_dropped"),
        "retraining": None,  # what became of a due retrain (set by `record_retraining`)
    }


def read(root: Path) -> list[dict[str, Any]]:
    """Every run's line, oldest first (none when the folder has no history yet)."""
    path = Path(root) / HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append(root: Path, line: dict[str, Any]) -> None:
    """Add one run's line to history.jsonl."""
    with open(Path(root) / HISTORY_FILE, "a") as fh:
        fh.write(json.dumps(line, default=str) + "\n")


def record_retraining(root: Path, run: str, outcome: dict[str, Any]) -> None:
    """Note what a run's retrain did (the submitted Kubeflow run, or why it failed) in its line, and
    redraw the page. history.jsonl is rewritten atomically (a temp file, then a rename)."""
    lines = read(root)
    for line in lines:
        if line["run"] == run:
            line["retraining"] = outcome
    _replace(Path(root) / HISTORY_FILE, "".join(json.dumps(line, default=str) + "\n" for line in lines))
    write_page(root)


def _replace(path: Path, text: str) -> None:
    """Write a file atomically (a temp file in the same folder, then a rename), readable by all."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def prune_html(root: Path, now: float, days: float) -> int:
    """Delete the Evidently HTML of runs that started more than `days` ago; returns how many files."""
    if days <= 0:
        return 0
    removed = 0
    for line in read(root):
        if now - float(line["started"]) <= days * 86400.0:
            continue
        for page in (Path(root) / line["run"] / "reports").glob("*.html"):
            page.unlink()
            removed += 1
    return removed


def plot_trend(lines: list[dict[str, Any]], out: Path) -> Path:
    """Drift share and click-through per run, with the runs that decided to retrain marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter

    when = [datetime.fromtimestamp(float(x["started"]), tz=UTC) for x in lines]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    share = [x["drift_share"] for x in lines]
    top.plot(when, [float("nan") if v is None else v for v in share], "o-", ms=3, label="feedback drift share")
    threshold = next((x["drift_share_threshold"] for x in reversed(lines) if x.get("drift_share_threshold")), None)
    if threshold is not None:
        top.axhline(threshold, color="grey", ls="--", lw=1, label=f"threshold {threshold}")
    top.set_ylim(-0.05, 1.05)
    top.set_ylabel("drifted share")
    for key, style, label in (("ctr_current", "o-", "click-through, current window"),
                              ("ctr_reference", "--", "click-through, reference window")):
        bottom.plot(when, [float("nan") if x[key] is None else x[key] for x in lines], style, ms=3, label=label)
    bottom.set_ylabel("clicks per impression")
    for axis in (top, bottom):
        for t, x in zip(when, lines, strict=True):
            if x["retrain"]:
                axis.axvline(t, color="#b00020", alpha=0.5, lw=1.5)
        axis.grid(alpha=0.3)
    if any(x["retrain"] for x in lines):
        top.plot([], [], color="#b00020", lw=1.5, label="retrain decided")
    top.legend(loc="upper left", fontsize=8)
    bottom.legend(loc="upper left", fontsize=8)
    bottom.xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M"))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _retraining(outcome: dict[str, Any] | None) -> str:
    if not outcome:
        return ""
    if outcome.get("url"):
        return f'<a href="{html.escape(outcome["url"])}">{html.escape(str(outcome.get("id", "run")))}</a>'
    return html.escape(str(outcome.get("error") or outcome.get("decision") or outcome))


def write_page(root: Path) -> Path:
    """Write root/index.html (and trend.png): the trend and one table row per run, newest first."""
    root = Path(root)
    lines = read(root)
    if lines:
        plot_trend(lines, root / TREND_FILE)
    rows = []
    for x in reversed(lines):
        verdict = '<span class="yes">RETRAIN</span>' if x["retrain"] else '<span class="no">no</span>'
        run = html.escape(x["run"])
        rows.append(
            f'<tr><td><a href="{run}/{INDEX_FILE}">{html.escape(x["at"])}</a></td>'
            f"<td><code>{html.escape(str(x['model_version']))}</code></td><td>{html.escape(x['status'])}</td>"
            f"<td>{_num(x['drift_share'])}</td><td>{_num(x['ctr_reference'])}</td><td>{_num(x['ctr_current'])}</td>"
            f"<td>{html.escape(', '.join(x['reasons']))}</td><td>{_num(x['streak'])}/{_num(x['streak_needed'])}</td>"
            f'<td>{verdict} (<a href="{run}/{DECISION_FILE}">json</a>)</td><td>{_retraining(x["retraining"])}</td></tr>'
        )
    plot = f'<img src="{TREND_FILE}" alt="drift share and click-through per run">' if lines else "<p>No runs yet.</p>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fusionrec drift history</title><style>{_STYLE}</style></head>
<body>
<h1>fusionrec drift history</h1>
<p>{len(lines)} monitor run(s); every run's folder is under <a href="{RUNS_DIR}/">{RUNS_DIR}/</a>
(<a href="{HISTORY_FILE}">{HISTORY_FILE}</a> has these numbers as JSON lines).</p>
{plot}
<h2>Runs</h2>
<table><tr><th>run (UTC)</th><th>model</th><th>status</th><th>drift share</th><th>CTR reference</th>
<th>CTR current</th><th>signals that may retrain</th><th>streak</th><th>decision</th><th>retraining run</th></tr>
{''.join(rows)}
</table>
</body></html>
"""
    _replace(root / INDEX_FILE, page)
    return root / INDEX_FILE
