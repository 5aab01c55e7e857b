#!/usr/bin/python3
"""Draw tuning/grafana-oxit.json from a running Prometheus, as a PNG.

A screenshot-equivalent of the Grafana dashboard without Grafana: every
panel of the dashboard JSON, at its grid position, drawn from what its
queries return through Prometheus's /api/v1/query_range. Time series are
lines, stat and gauge panels their last value over a sparkline.

    /usr/bin/python3 tuning/render-dashboard.py \\
        --prometheus http://127.0.0.1:9090 --start 1700000000 --end 1700000300 \\
        --out tuning/dashboard.png

Needs Debian's python3-matplotlib (`apt-get install python3-matplotlib`).
tests/interop/tests/prometheus.rs runs it with OXIT_RENDER_DASHBOARD=path;
tuning/README.md says how tuning/dashboard.png was made.
"""

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BG = "#111217"
PANEL = "#181b1f"
TEXT = "#d8d9da"
GRID = "#2c3235"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9",
          "#8ab8ff", "#ff780a", "#96d98d", "#ca95e5", "#fade2a", "#c4162a"]


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        v = json.load(r)
    if v.get("status") != "success":
        raise RuntimeError(f"{expr}: {v.get('error')}")
    return v["data"]["result"]


def legend(fmt, metric):
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in metric.items()) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def scale(unit, values):
    """(factor, suffix) so that the largest value reads well."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    top = max(finite, default=0)
    if unit == "percentunit":
        return 100, "%"
    if unit == "d":
        return 1, " days"
    if unit == "s":
        return 1, " s"
    if unit in ("bps", "bytes"):
        base, names = (1000, ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"]) \
            if unit == "bps" else (1024, ["B", "KiB", "MiB", "GiB", "TiB"])
        i = 0
        while top >= base and i < len(names) - 1:
            top /= base
            i += 1
        return 1 / base ** i, " " + names[i]
    suffix = {"reqps": "/s", "ops": "/s"}.get(unit, "")
    for f, s in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if top >= f:
            return 1 / f, f" {s}{suffix.strip()}" if suffix else f" {s}"
    return 1, suffix and " " + suffix


def fmt_value(v, unit):
    if not math.isfinite(v):
        return "n/a"
    f, s = scale(unit, [v])
    x = v * f
    digits = 0 if abs(x) >= 100 or (unit == "none" and x == int(x)) else 1 if abs(x) >= 10 else 2
    return f"{x:.{digits}f}{s}"


def draw_panel(fig, ax, panel, series, width_units):
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    kind = panel.get("type")
    ax.set_facecolor(PANEL)
    for s in ax.spines.values():
        s.set_color(GRID)
    ax.tick_params(colors=TEXT, labelsize=6)
    ax.set_title(panel.get("title", ""), color=TEXT, fontsize=8, loc="left", pad=3)
    allv = [v for _, _, ys, _ in series for v in ys]
    if not series:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if kind in ("stat", "gauge"):
        # Last value of each series, large, over a faint sparkline.
        lines = []
        for i, (name, xs, ys, u) in enumerate(series):
            last = next((y for y in reversed(ys) if math.isfinite(y)), float("nan"))
            lines.append((name, fmt_value(last, u), COLORS[i % len(COLORS)]))
            ax.plot(xs, ys, color=COLORS[i % len(COLORS)], alpha=0.25, linewidth=1)
        n = len(lines)
        # Up to three values stacked; more side by side in tiles, as
        # Grafana lays out a stat panel with many series.
        cols = 1 if n <= 3 else min(n, 10)
        rows = math.ceil(n / cols)
        for i, (name, text, color) in enumerate(lines):
            c, r = i % cols, i // cols
            x = (c + 0.5) / cols
            y = 0.5 if rows == 1 and cols > 1 or n == 1 else 0.75 - r * (0.5 / max(1, rows - 1))
            size = 20 if n == 1 else 13 if cols == 1 else 11
            ax.text(x, y, text, color=color, fontsize=size, ha="center",
                    va="center", transform=ax.transAxes, weight="bold")
            ax.text(x, y - (0.2 if n == 1 else 0.12), name, color=TEXT,
                    fontsize=6, ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    f, suffix = scale(unit, allv)
    for i, (name, xs, ys, _) in enumerate(series):
        t0 = xs[0] if xs else 0
        ax.plot([(x - t0) for x in xs], [y * f for y in ys], linewidth=1,
                color=COLORS[i % len(COLORS)], label=name)
    ax.grid(color=GRID, linewidth=0.5)
    ax.set_xlabel("seconds", color=TEXT, fontsize=6, labelpad=1)
    ax.set_ylabel(suffix.strip(), color=TEXT, fontsize=6, labelpad=1)
    if len(series) <= 12:
        ax.legend(fontsize=5, loc="upper left", ncol=max(1, min(4, width_units // 3)),
                  facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, framealpha=0.7)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True, help="e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", default="tuning/grafana-oxit.json")
    ap.add_argument("--start", type=float, help="unix seconds (default: end - 10 min)")
    ap.add_argument("--end", type=float, help="unix seconds (default: now)")
    ap.add_argument("--step", type=float, help="seconds (default: range / 200, at least 1)")
    ap.add_argument("--rate-interval", default="10s",
                    help="what $__rate_interval stands for (default 10s: 1 s scrapes)")
    ap.add_argument("--instance", default=".*", help="value of $instance (a regex)")
    ap.add_argument("--out", default="tuning/dashboard.png")
    a = ap.parse_args()
    end = a.end or time.time()
    start = a.start or end - 600
    step = a.step or max(1.0, (end - start) / 200)
    with open(a.dashboard) as f:
        dash = json.load(f)

    panels = []
    for p in dash["panels"]:
        panels.append(p)
        panels.extend(p.get("panels", []))
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.28  # inches per grid row
    width, height = 20.0, rows * unit_h + 0.6
    fig = plt.figure(figsize=(width, height), facecolor=BG, dpi=110)
    span = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start))
    fig.text(0.01, 1 - 0.25 / height, f"{dash.get('title', '')}  ·  {end - start:.0f} s "
             f"from {span}  ·  $__rate_interval={a.rate_interval}",
             color=TEXT, fontsize=10, va="top", weight="bold")
    top = 0.6 / height

    def box(g, pad_x=0.004, pad_y=0.004, title_room=0.0):
        x0 = g["x"] / 24 + pad_x + 0.012
        w = g["w"] / 24 - 2 * pad_x - 0.014
        y_top = 1 - top - (g["y"] * unit_h) / height
        h = (g["h"] * unit_h) / height
        return [x0, y_top - h + pad_y + 0.012, w, h - 2 * pad_y - title_room - 0.012]

    empty = []
    for p in panels:
        g = p["gridPos"]
        if p.get("type") == "row":
            y = 1 - top - (g["y"] * unit_h + 0.14) / height
            fig.text(0.008, y, p.get("title", ""), color=TEXT, fontsize=9, weight="bold",
                     va="center")
            continue
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        # Per-series units from "byName" overrides (e.g. a ratio beside a
        # percentage).
        by_name = {}
        for o in p.get("fieldConfig", {}).get("overrides", []):
            if o.get("matcher", {}).get("id") == "byName":
                for prop in o.get("properties", []):
                    if prop.get("id") == "unit":
                        by_name[o["matcher"].get("options")] = prop.get("value")
        series = []
        for t in p.get("targets", []):
            expr = (t["expr"].replace("$__rate_interval", a.rate_interval)
                    .replace("$__interval", f"{step:.0f}s")
                    .replace("$instance", a.instance).replace("$worker", ".*"))
            for r in query_range(a.prometheus, expr, start, end, step):
                xs = [float(v[0]) for v in r["values"]]
                ys = [float(v[1]) for v in r["values"]]
                name = legend(t.get("legendFormat", ""), r["metric"])
                series.append((name, xs, ys, by_name.get(name, unit)))
        if not series:
            empty.append(p.get("title"))
        ax = fig.add_axes(box(g, title_room=0.0))
        draw_panel(fig, ax, p, series, g["w"])
    fig.savefig(a.out, facecolor=BG)
    print(f"wrote {a.out}: {len(panels)} panels, {start:.0f}..{end:.0f} step {step:.0f}s")
    if empty:
        print("panels without data: " + ", ".join(empty), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
