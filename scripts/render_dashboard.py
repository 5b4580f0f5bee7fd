#!/usr/bin/env python3
"""Draw deploy/grafana/tracer-pod-starts.json from real data, without Grafana.

    sudo .venv/bin/python scripts/render_dashboard.py [--minutes 4] [--output out/dashboard.svg]

needs Debian's `prometheus` (apt-get install prometheus).  On the project's
containerd test bed ($TRACER_TESTBED_DIR) it runs `tracer daemon`, a
Prometheus of its own that scrapes the daemon every second (on loopback,
with its data in a temporary directory), and pods: healthy ones in waves
and the failing ones of tests/failure_cases.py.  Then it evaluates every
query of every panel with that Prometheus, as Grafana would (time series
over the run, instant queries for tables and bar gauges, $__rate_interval
15 s, $__range the run, $instance all), and draws the panels where the
dashboard places them: lines with a legend, tables, bars.  Writes an SVG
and, with rsvg-convert, a PNG next to it.

It checks the dashboard's queries and layout on real data; it is not
Grafana (no units beyond s, bytes and plain numbers, no thresholds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from html import escape
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

DASHBOARD = REPO / "deploy" / "grafana" / "tracer-pod-starts.json"
RATE_INTERVAL = "15s"
COLUMN_PX, ROW_PX = 60, 34
COLOURS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0",
           "#508642", "#cca300", "#447ebc", "#c15c17"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


class Prometheus:
    """Debian's prometheus, scraping one target every second; ours, stopped by its PID."""

    def __init__(self, target: str, workdir: Path):
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "tracer", "static_configs": [{"targets": [target]}]}]}))
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("wb"))
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                get_json(self.base + "/api/v1/status/buildinfo")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("prometheus did not start")

    def query(self, expr: str, at: float) -> list[dict]:
        query = urllib.parse.urlencode({"query": expr, "time": at})
        return get_json(f"{self.base}/api/v1/query?{query}")["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        return get_json(f"{self.base}/api/v1/query_range?{query}")["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_load(minutes: float, workdir: Path) -> tuple[Prometheus, float, float]:
    """The daemon, its Prometheus and pods on the test bed; returns (prometheus, start, end)."""
    from daemon_process import start_daemon
    import uuid

    from failure_cases import remove_outcomes, run_cases, with_uids
    from tracer_testbed import PodSpec, Testbed
    from tracer_testbed.kubelet import run_pods_as_kubelet

    bed = Testbed()
    bed.start()
    daemon = prometheus = None
    try:
        daemon = start_daemon(workdir / "daemon.log", {"TRACER_NODE_NAME": "dashboard-node",
                                                       "TRACER_CRI_SOCKETS": str(bed.socket)}, ("--no-otlp",))
        prometheus = Prometheus(daemon.metrics_url.removeprefix("http://"), workdir)
        started = time.time()
        deadline = time.monotonic() + minutes * 60
        wave = 0
        while time.monotonic() < deadline:
            specs = [PodSpec(name=f"wave{wave}-{i}", namespace="dashboard", command=("sleep", "3600"))
                     for i in range(4)]
            outcomes = run_pods_as_kubelet(bed.socket, specs, bed.layout.pod_logs)
            if wave % 3 == 1:  # every failure the diagnosis knows, and a healthy pod beside them
                healthy, cases = with_uids(lambda _name: str(uuid.uuid4()))
                remove_outcomes(bed, run_cases(bed, healthy, cases))
            time.sleep(10)
            for outcome in outcomes:
                if hasattr(outcome, "sandbox_id"):
                    bed.stop_pod(outcome)
            wave += 1
        time.sleep(5)
        return prometheus, started, time.time()
    except BaseException:
        if prometheus is not None:
            prometheus.stop()
        raise
    finally:
        if daemon is not None:
            daemon.terminate()
        bed.stop()


def substitute(expr: str, range_s: float) -> str:
    return (expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", f"{int(range_s)}s")
            .replace('"$instance"', '".*"'))


def legend(template: str, labels: dict) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "–"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    return f"{value:.3g}"


def draw_timeseries(series: list[tuple[str, list[tuple[float, float]]]], unit: str, x: float, y: float,
                    w: float, h: float, start: float, end: float) -> list[str]:
    out = []
    plot_x, plot_y, plot_w = x + 58, y + 28, w - 70
    shown = min(len(series), 8)
    columns = 2 if shown > 4 else 1
    plot_h = h - 40 - 13 * math.ceil(shown / columns)
    values = [v for _, points in series for _, v in points if not math.isnan(v)]
    top = max(values) * 1.1 if values and max(values) > 0 else 1.0
    out.append(f'<rect x="{plot_x}" y="{plot_y}" width="{plot_w}" height="{plot_h}" fill="#111217" stroke="#333"/>')
    for i in range(5):
        level = top * i / 4
        gy = plot_y + plot_h - plot_h * i / 4
        out.append(f'<line x1="{plot_x}" x2="{plot_x + plot_w}" y1="{gy}" y2="{gy}" stroke="#2a2d33"/>')
        out.append(f'<text x="{plot_x - 4}" y="{gy + 4}" text-anchor="end" font-size="10" fill="#aaa">'
                   f'{escape(fmt(level, unit))}</text>')
    for n, (name, points) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        coords = [(plot_x + plot_w * (t - start) / max(1, end - start), plot_y + plot_h - plot_h * v / top)
                  for t, v in points if not math.isnan(v)]
        if len(coords) > 1:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
                       + " ".join(f"{px:.1f},{py:.1f}" for px, py in coords) + '"/>')
        elif coords:
            out.append(f'<circle cx="{coords[0][0]}" cy="{coords[0][1]}" r="2" fill="{colour}"/>')
        if n < shown:
            ly = plot_y + plot_h + 14 + 13 * (n // columns)
            lx = plot_x + (n % columns) * plot_w / columns
            last = next((v for _, v in reversed(points) if not math.isnan(v)), float("nan"))
            out.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
                       f'<text x="{lx + 14}" y="{ly}" font-size="10" fill="#ccc">{escape(name)} '
                       f'(last {escape(fmt(last, unit))})</text>')
    if not series:
        out.append(f'<text x="{x + w / 2}" y="{y + h / 2}" text-anchor="middle" fill="#888">No data</text>')
    elif len(series) > shown:
        out.append(f'<text x="{x + w - 8}" y="{y + h - 6}" text-anchor="end" font-size="10" fill="#888">'
                   f'+{len(series) - shown} more series</text>')
    return out


def draw_table(rows: list[dict], value_name: str, x: float, y: float, w: float, h: float) -> list[str]:
    out = []
    if not rows:
        return [f'<text x="{x + w / 2}" y="{y + h / 2}" text-anchor="middle" fill="#888">No data</text>']
    columns = [c for c in rows[0]["metric"] if c != "__name__"] + [value_name]
    width = (w - 16) / len(columns)
    for i, column in enumerate(columns):
        out.append(f'<text x="{x + 8 + i * width}" y="{y + 44}" font-size="11" font-weight="bold" fill="#ddd">'
                   f'{escape(column)}</text>')
    for r, row in enumerate(rows[: int((h - 60) // 16)]):
        cells = [row["metric"].get(c, "") for c in columns[:-1]] + [fmt(float(row["value"][1]), "")]
        for i, cell in enumerate(cells):
            out.append(f'<text x="{x + 8 + i * width}" y="{y + 62 + 16 * r}" font-size="11" fill="#ccc">'
                       f'{escape(str(cell)[:40])}</text>')
    return out


def draw_bars(bars: list[tuple[str, float]], unit: str, x: float, y: float, w: float, h: float) -> list[str]:
    out = []
    if not bars:
        return [f'<text x="{x + w / 2}" y="{y + h / 2}" text-anchor="middle" fill="#888">No data</text>']
    top = max(v for _, v in bars) or 1
    row_h = min(24, (h - 40) / len(bars))
    for i, (name, value) in enumerate(sorted(bars, key=lambda b: -b[1])):
        by = y + 34 + i * row_h
        out.append(f'<text x="{x + 8}" y="{by + row_h * 0.7}" font-size="11" fill="#ccc">{escape(name)}</text>'
                   f'<rect x="{x + 110}" y="{by + 2}" width="{(w - 200) * value / top:.1f}" height="{row_h - 5}" '
                   f'fill="{COLOURS[i % len(COLOURS)]}"/>'
                   f'<text x="{x + w - 8}" y="{by + row_h * 0.7}" text-anchor="end" font-size="11" fill="#ddd">'
                   f'{escape(fmt(value, unit))}</text>')
    return out


def render(prometheus: Prometheus, start: float, end: float) -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    width, height = 24 * COLUMN_PX + 16, bottom * ROW_PX + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="#0b0c0e"/>',
           f'<text x="12" y="28" font-size="18" fill="#eee">{escape(dashboard["title"])} — rendered from a real '
           f'Prometheus, {int(end - start)} s of data</text>']
    step = max(1.0, (end - start) / 200)
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        x, y = 8 + grid["x"] * COLUMN_PX, 40 + grid["y"] * ROW_PX
        w, h = grid["w"] * COLUMN_PX - 6, grid["h"] * ROW_PX - 6
        if panel["type"] == "row":
            out.append(f'<text x="{x}" y="{y + 22}" font-size="14" font-weight="bold" fill="#eee">'
                       f'{escape(panel["title"])}</text>')
            continue
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="#181b1f" stroke="#2f3338" rx="3"/>'
                   f'<text x="{x + 8}" y="{y + 18}" font-size="12" fill="#ddd">{escape(panel["title"])}</text>')
        if panel["type"] == "timeseries":
            series = []
            for target in panel["targets"]:
                for result in prometheus.query_range(substitute(target["expr"], end - start), start, end, step):
                    series.append((legend(target["legendFormat"], result["metric"]),
                                   [(float(t), float(v)) for t, v in result["values"]]))
            out += draw_timeseries(series, unit, x, y, w, h, start, end)
        elif panel["type"] == "table":
            rows = [r for t in panel["targets"] for r in prometheus.query(substitute(t["expr"], end - start), end)]
            renames = next((tr["options"].get("renameByName", {}) for tr in panel.get("transformations", [])), {})
            out += draw_table(rows, renames.get("Value", "value"), x, y, w, h)
        elif panel["type"] == "bargauge":
            bars = [(legend(t["legendFormat"], r["metric"]), float(r["value"][1])) for t in panel["targets"]
                    for r in prometheus.query(substitute(t["expr"], end - start), end)]
            out += draw_bars([b for b in bars if not math.isnan(b[1])], unit, x, y, w, h)
    out.append("</svg>")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--output", type=Path, default=Path("out/dashboard.svg"))
    args = parser.parse_args()
    if shutil.which("prometheus") is None:
        sys.exit("needs Prometheus: apt-get install prometheus")
    if os.geteuid() != 0:
        sys.exit("needs root (the test bed, BPF)")
    with tempfile.TemporaryDirectory(prefix="tracer-dashboard-") as tmp:
        prometheus, start, end = run_load(args.minutes, Path(tmp))
        try:
            svg = render(prometheus, start, end)
        finally:
            prometheus.stop()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(svg)
    png = args.output.with_suffix(".png")
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", "-o", str(png), str(args.output)], check=True)
    print(json.dumps({"svg": str(args.output), "png": str(png), "seconds_of_data": round(end - start)}))


if __name__ == "__main__":
    main()
