#!/usr/bin/env python3
"""Plot gate.json as an SVG: per-call cost of each case on a log scale,
grouped by op, implementation cases next to their baselines, with the sync
and async budgets drawn as lines.

  plot.py GATE_JSON OUT_SVG
"""
import json
import math
import sys
from xml.sax.saxutils import escape

LO, HI = 1.0, 1e6  # ns: 1 ns .. 1 ms
LEFT, RIGHT, TOP, ROW, GAP = 250, 40, 50, 20, 14
WIDTH = 900
COLORS = {"sync": "#1f77b4", "async": "#2ca02c", "baseline": "#aaaaaa"}


def x_of(ns):
    ns = min(max(ns, LO), HI)
    return LEFT + (WIDTH - LEFT - RIGHT) * math.log10(ns / LO) / math.log10(HI / LO)


def label(ns):
    for unit, scale in (("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        gate = json.load(f)
    cases = gate["cases"]
    ops = []
    for info in cases.values():
        if info["op"] not in ops:
            ops.append(info["op"])
    rows = []  # (y, name, info) or (y, op heading, None)
    y = TOP
    for op in ops:
        rows.append((y, op, None))
        y += ROW
        members = [(n, i) for n, i in cases.items() if i["op"] == op]
        members.sort(key=lambda m: (m[1]["kind"] == "baseline", m[0]))
        for name, info in members:
            rows.append((y, name, info))
            y += ROW
        y += GAP
    height = y + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">'
           'Per-call cost (median, log scale): implementation vs baselines</text>']
    for exp in range(0, 7):  # grid: 1 ns .. 1 ms
        x = x_of(10 ** exp)
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{height - 35}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 20}" text-anchor="middle">'
                   f'{label(10 ** exp)}</text>')
    for kind, ns in gate.get("budgets_ns", {}).items():
        x = x_of(ns)
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{height - 35}" '
                   f'stroke="{COLORS[kind]}" stroke-dasharray="6,4" stroke-width="1.5"/>')
        out.append(f'<text x="{x + 3:.1f}" y="{TOP - 12}" fill="{COLORS[kind]}">'
                   f'{kind} budget {label(ns)}</text>')
    for y, name, info in rows:
        if info is None:
            out.append(f'<text x="8" y="{y + 14}" font-weight="bold">op: {escape(name)}</text>')
            continue
        out.append(f'<text x="{LEFT - 8}" y="{y + 14}" text-anchor="end">{escape(name)}</text>')
        ns = info.get("median_ns_per_call")
        if ns is None:
            continue
        x = x_of(ns)
        out.append(f'<rect x="{LEFT}" y="{y + 3}" width="{max(x - LEFT, 1):.1f}" '
                   f'height="{ROW - 6}" fill="{COLORS[info["kind"]]}"/>')
        out.append(f'<text x="{x + 4:.1f}" y="{y + 14}">{label(ns)}</text>')
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
