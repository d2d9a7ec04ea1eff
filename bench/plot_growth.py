#!/usr/bin/env python3
"""Plot growth.json as an SVG: each growth curve on log-log axes, three
panels: its time per unit (median and 95 % interval), the cost its verdict
is taken on (instructions per unit; for threads, the time over the
cached-loop wrapper's) and its bytes per unit (heap in use, and resident
memory dashed), segments red where the curve bends, orange where
undecided; then the thread churn and the memory of a spike. Without
GROWTH_JSON (the measurements did not run) the plot says so.

  plot_growth.py GROWTH_JSON OUT_SVG
"""
import json
import math
import os
import sys
from xml.sax.saxutils import escape

from plot import label_ns

WIDTH = 900
PANEL_W, PANEL_H = 220, 170
MARGIN_L, MARGIN_T, GUTTER, ROW = 60, 40, 80, 20
SEGMENT_COLORS = {"flat": "#1f77b4", "bends": "#d62728", "undecided": "#ff7f0e"}
UNITS = {"pending": "call", "batch": "item", "depth": "level", "threads": "thread"}
XLABEL = {"pending": "calls pending on one loop", "batch": "items in the batch",
          "depth": "sync nesting depth", "threads": "threads calling at once"}


def label_bytes(b):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.3g} B"


def label_n(n):
    return f"{n:g}" if n < 1e4 else f"1e{round(math.log10(n))}"


def label_bytes_axis(b):
    return f"{label_n(b)} B"


class Panel:
    """A log-log panel at (x0, y0), fitted to the values it will show."""

    def __init__(self, out, x0, y0, xs, ys, title, ylabel):
        self.out, self.x0, self.y0 = out, x0, y0
        self.xlo, self.xhi = min(xs), max(xs)
        if self.xlo == self.xhi:
            self.xhi = self.xlo * 2
        positive = [y for y in ys if y and y > 0] or [1]
        self.ylo = 10 ** math.floor(math.log10(min(positive)))
        self.yhi = 10 ** math.ceil(math.log10(max(positive)))
        if self.ylo == self.yhi:
            self.yhi *= 10
        self.frame(title, ylabel)

    def x(self, v):
        return self.x0 + PANEL_W * math.log10(v / self.xlo) / math.log10(self.xhi / self.xlo)

    def y(self, v):
        v = min(max(v, self.ylo), self.yhi)
        return self.y0 + PANEL_H * (1 - math.log10(v / self.ylo) / math.log10(self.yhi / self.ylo))

    def frame(self, title, ylabel):
        o, x0, y0 = self.out, self.x0, self.y0
        o.append(f'<text x="{x0 + PANEL_W / 2}" y="{y0 - 10}" text-anchor="middle">'
                 f'{escape(title)}</text>')
        o.append(f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" '
                 'stroke="#999"/>')
        e = round(math.log10(self.ylo))
        while 10 ** e <= self.yhi * 1.001:
            y = self.y(10 ** e)
            o.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" '
                     'stroke="#eee"/>')
            o.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{escape(ylabel(10 ** e))}</text>')
            e += 1

    def xticks(self, ns, caption):
        for n in ns:
            x = self.x(n)
            self.out.append(f'<text x="{x:.1f}" y="{self.y0 + PANEL_H + 14}" '
                            f'text-anchor="middle">{label_n(n)}</text>')
        self.out.append(f'<text x="{self.x0 + PANEL_W / 2}" y="{self.y0 + PANEL_H + 30}" '
                        f'text-anchor="middle" fill="#555">{escape(caption)}</text>')

    def line(self, n0, v0, n1, v1, color, dashed=False):
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        self.out.append(f'<line x1="{self.x(n0):.1f}" y1="{self.y(v0):.1f}" '
                        f'x2="{self.x(n1):.1f}" y2="{self.y(v1):.1f}" stroke="{color}" '
                        f'stroke-width="2"{dash}/>')

    def point(self, n, v, lo=None, hi=None):
        x = self.x(n)
        if lo is not None and hi is not None:
            self.out.append(f'<line x1="{x:.1f}" y1="{self.y(lo):.1f}" x2="{x:.1f}" '
                            f'y2="{self.y(hi):.1f}" stroke="black"/>')
        self.out.append(f'<circle cx="{x:.1f}" cy="{self.y(v):.1f}" r="3" fill="black"/>')


def judged_line(panel, segments, points, key):
    for seg, p0, p1 in zip(segments, points, points[1:]):
        if p0[key] > 0 and p1[key] > 0:
            panel.line(p0["n"], p0[key], p1["n"], p1[key], SEGMENT_COLORS[seg["verdict"]])


def time_panel(out, name, c, x0, y0):
    """The time per unit; for threads, the cached-loop wrapper's dashed."""
    points, ns = c["points"], c["n"]
    base = [p["ns"] / p["ratio"] for p in points if p.get("ratio")]
    values = [p["ns"] for p in points] + [v for p in points for v in p["ci"] if v] + base
    title = f"{name}: time per {UNITS[name]}" + (" (cached-loop dashed)" if base else "")
    panel = Panel(out, x0, y0, ns, values, title, label_ns)
    for p0, p1 in zip(points, points[1:]):
        panel.line(p0["n"], p0["ns"], p1["n"], p1["ns"], "#555")
    for n0, b0, n1, b1 in zip(ns, base, ns[1:], base[1:]):
        panel.line(n0, b0, n1, b1, "#888", dashed=True)
    for p in points:
        panel.point(p["n"], p["ns"], *p["ci"])
    panel.xticks(ns, XLABEL[name])


def cost_panel(out, name, c, x0, y0):
    """What the cost verdict is taken on."""
    points, ns = c["points"], c["n"]
    if "ratio_segments" in c:
        values = [p["ratio"] for p in points] + [v for p in points for v in p["ratio_ci"] if v]
        panel = Panel(out, x0, y0, ns, values, f"over cached-loop: {c['cost_verdict']}",
                      lambda r: f"{r:g}")
        judged_line(panel, c["ratio_segments"], points, "ratio")
        for p in points:
            panel.point(p["n"], p["ratio"], *p["ratio_ci"])
    elif "instruction_segments" in c:
        panel = Panel(out, x0, y0, ns, [p["instructions"] for p in points],
                      f"instructions per {UNITS[name]}: {c['cost_verdict']}", label_n)
        judged_line(panel, c["instruction_segments"], points, "instructions")
        for p in points:
            panel.point(p["n"], p["instructions"])
    else:
        return
    panel.xticks(ns, XLABEL[name])


def bytes_panel(out, name, c, x0, y0):
    points, ns = c["points"], c["n"]
    values = [p["heap_bytes"] for p in points] + [p["rss_bytes"] for p in points]
    panel = Panel(out, x0, y0, ns, values, f"bytes per {UNITS[name]}: {c['bytes_verdict']}",
                  label_bytes_axis)
    judged_line(panel, c["bytes_segments"], points, "heap_bytes")
    for p0, p1 in zip(points, points[1:]):
        if p0["rss_bytes"] > 0 and p1["rss_bytes"] > 0:
            panel.line(p0["n"], p0["rss_bytes"], p1["n"], p1["rss_bytes"], "#888", dashed=True)
    for p in points:
        if p["heap_bytes"] > 0:
            panel.point(p["n"], p["heap_bytes"])
    panel.xticks(ns, XLABEL[name])


def curve_panels(out, name, c, y0):
    for k, draw in enumerate((time_panel, cost_panel, bytes_panel)):
        draw(out, name, c, MARGIN_L + k * (PANEL_W + GUTTER), y0)
    return y0 + PANEL_H + 75


def hbars(out, y, rows, scale, label, title, marks=()):
    """Horizontal bars on a log scale: rows of (text, value, low, high, color);
    marks: (value, text) drawn as dashed lines."""
    lo = 10 ** math.floor(math.log10(min(r[1] for r in rows)))
    hi = 10 ** math.ceil(math.log10(max(max(r[1], r[3] or 0) for r in rows)))
    left, width = 260, WIDTH - 260 - 80

    def x(v):
        return left + width * math.log10(max(v, lo) / lo) / math.log10(hi / lo)

    out.append(f'<text x="{WIDTH / 2}" y="{y}" text-anchor="middle" font-size="14">'
               f'{escape(title)}</text>')
    y += 10
    top = y
    for text, value, low, high, color in rows:
        out.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{escape(text)}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{max(x(value) - left, 1):.1f}" '
                   f'height="{ROW - 6}" fill="{color}"/>')
        end = x(value)
        if low is not None and high is not None:
            out.append(f'<line x1="{x(low):.1f}" y1="{y + ROW / 2}" x2="{x(high):.1f}" '
                       f'y2="{y + ROW / 2}" stroke="black"/>')
            end = max(end, x(high))
        out.append(f'<text x="{end + 6:.1f}" y="{y + 14}">{escape(label(value))}</text>')
        y += ROW
    for value, text in marks:
        out.append(f'<line x1="{x(value):.1f}" y1="{top}" x2="{x(value):.1f}" y2="{y}" '
                   'stroke="#d62728" stroke-dasharray="6,4"/>')
        out.append(f'<text x="{x(value) + 4:.1f}" y="{y + 14}" fill="#d62728">'
                   f'{escape(text)}</text>')
    return y + 40


def churn_rows(churn):
    rows = []
    for k, c in churn.items():
        rows.append((f"{k} at a time: bare thread", *c["bare_ns"], "#aaaaaa"))
        rows.append((f"{k} at a time: one sync call", *c["sa_ns"], "#1f77b4"))
    return rows


def memory_rows(memory):
    rows = []
    for name, m in memory.items():
        rss = m["rss_bytes"]
        rows.append((f"bytes per {name} (heap)", m["heap"], None, None, "#1f77b4"))
        for when, v in zip(("RSS before", "RSS at peak", "RSS after"), rss):
            rows.append((f"{name}s: {when}", v, None, None, "#aaaaaa"))
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    if not os.path.exists(sys.argv[1]):
        write(sys.argv[2], MARGIN_T + 60, "", [
            f'<text x="{WIDTH / 2}" y="{MARGIN_T + 20}" text-anchor="middle">No growth data: '
            "the measurements did not run to the end (see the scorecard's summary)</text>"])
        return
    with open(sys.argv[1]) as f:
        growth = json.load(f)
    body = []
    y = MARGIN_T + 20
    for name, c in growth["curves"].items():
        y = curve_panels(body, name, c, y)
    one = growth["churn"]["1"]
    y = hbars(body, y, churn_rows(growth["churn"]), 1, label_ns,
              "Thread churn: per thread, a bare create+join and one making a sync call "
              "(median, 95 % interval)",
              [(one["bare_ns"][0] + 2000, "bare + 2 us (target, one at a time)")])
    spike = growth["memory"]["pending future"]["rss_bytes"][0]
    y = hbars(body, y, memory_rows(growth["memory"]), 1, label_bytes,
              "Memory at 100,000 pending calls: bytes per call, and resident memory before, "
              "at the peak and after",
              [(1.1 * spike, "RSS before + 10 % (target)")])
    write(sys.argv[2], y, f" (log-log; a segment bends above slope {growth['bend_slope']}: red)",
          body)


def write(path, height, subtitle, body):
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">'
           f'Cost and memory as the work grows{subtitle}</text>'] + body + ["</svg>"]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
