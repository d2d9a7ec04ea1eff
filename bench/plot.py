#!/usr/bin/env python3
"""Plot gate.json as an SVG, on log scales: the cost per call of each case
(median, its 95 % interval as a whisker, the quantile that budgets judge as
a tick), grouped by op, implementation cases next to their baselines and to
the ancestor's model, with the sync and async budgets drawn as lines and
each budgeted case marked with its verdict; then the paired ratio of each
case to each of its baselines, with its interval. The axes span the data.
Without GATE_JSON (the benchmarks did not run) the plot says so.

  plot.py GATE_JSON OUT_SVG
"""
import json
import math
import os
import sys
from xml.sax.saxutils import escape

LEFT, RIGHT, TOP, ROW, GAP = 250, 60, 50, 20, 14
WIDTH = 900
COLORS = {"sync": "#1f77b4", "async": "#2ca02c", "baseline": "#aaaaaa", "ancestor": "#d62728"}
LEGEND = {"sync": "sync call", "async": "async call", "baseline": "baseline",
          "ancestor": "the ancestor's model"}
# A budgeted case's verdict, as gate.py gives it: its mark and colour.
MARKS = {"pass": ("\u2713 pass", "#2ca02c"), "FAIL": ("\u2717 FAIL", "#d62728"),
         "undecided": ("? undecided", "#ff7f0e")}


class LogAxis:
    """x positions of values from lo to hi on a log scale."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    @classmethod
    def spanning(cls, values, lo, hi):
        """An axis of whole decades holding every value, at least lo to hi."""
        values = [v for v in values if v is not None and v > 0]
        lo = min([lo] + values)
        hi = max([hi] + values)
        return cls(10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi)))

    def x(self, v):
        v = min(max(v, self.lo), self.hi)
        return LEFT + (WIDTH - LEFT - RIGHT) * math.log10(v / self.lo) / math.log10(
            self.hi / self.lo)

    def decades(self):
        return [10 ** e for e in range(round(math.log10(self.lo)), round(math.log10(self.hi)) + 1)]


def label_ns(ns):
    for unit, scale in (("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def label_ratio(r):
    return f"{r:.3g}"


def grid(out, at, axis, top, bottom, label):
    """Grid lines from top to bottom, under what out holds from index `at`."""
    lines = []
    for v in axis.decades():
        x = axis.x(v)
        lines.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#e5e5e5"/>')
        lines.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{label(v)}</text>')
    out[at:at] = lines


def whisker(out, axis, y, lo, hi):
    if lo is None or hi is None:
        return
    x0, x1 = axis.x(lo), axis.x(hi)
    out.append(f'<line x1="{x0:.1f}" y1="{y}" x2="{x1:.1f}" y2="{y}" stroke="black"/>')
    for x in (x0, x1):
        out.append(f'<line x1="{x:.1f}" y1="{y - 4}" x2="{x:.1f}" y2="{y + 4}" stroke="black"/>')


def bar(out, axis, y, value, color, text, interval, mark=None):
    """A bar to value, its interval as a whisker, the text past both, then
    the verdict's mark if any."""
    x = axis.x(value)
    out.append(f'<rect x="{LEFT}" y="{y + 3}" width="{max(x - LEFT, 1):.1f}" '
               f'height="{ROW - 6}" fill="{color}"/>')
    whisker(out, axis, y + ROW / 2, *interval)
    end = max(x, axis.x(interval[1])) if interval[1] is not None else x
    out.append(f'<text x="{end + 6:.1f}" y="{y + 14}">{escape(text)}')
    if mark:
        out.append(f'<tspan dx="8" fill="{MARKS[mark][1]}" font-weight="bold">'
                   f'{MARKS[mark][0]}</tspan>')
    out.append('</text>')


def legend(out, y):
    """The colours, in a row."""
    x = LEFT
    for kind, text in LEGEND.items():
        out.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{COLORS[kind]}"/>')
        out.append(f'<text x="{x + 16}" y="{y}">{escape(text)}</text>')
        x += 30 + 7 * len(text)
    return y + 20


def row_label(out, y, text, bold=False):
    weight = ' font-weight="bold"' if bold else ""
    anchor = "start" if bold else "end"
    x = 8 if bold else LEFT - 8
    out.append(f'<text x="{x}" y="{y + 14}" text-anchor="{anchor}"{weight}>{escape(text)}</text>')


def cost_rows(gate):
    """(op, [(name, kind, entry)]) in op order: ours, the baselines, the ancestor."""
    groups = {}
    for name, e in gate["cases"].items():
        groups.setdefault(e["op"], []).append((name, e["kind"], e))
    for name, e in gate.get("ancestor", {}).get("cases", {}).items():
        groups.setdefault(name.rsplit("/", 1)[-1], []).append((name, "ancestor", e))
    order = {"sync": 0, "async": 1, "baseline": 2, "ancestor": 3}
    return [(op, sorted(rows, key=lambda r: (order[r[1]], r[0]))) for op, rows in groups.items()]


def cost_values(gate):
    """Every value the cost section draws."""
    values = list(gate.get("budgets_ns", {}).values())
    for _, rows in cost_rows(gate):
        for _, _, e in rows:
            values += [e.get("median_ns_per_call"), e.get("quantile_ns_per_call")]
            values += e.get("median_ci") or []
    return values


def cost_section(out, gate, y):
    axis = LogAxis.spanning(cost_values(gate), 10, 1e4)
    # One line per budget label above the chart, so that close budgets do
    # not overlap.
    budgets = sorted(gate.get("budgets_ns", {}).items(), key=lambda kv: kv[1])
    y += 16 * max(len(budgets) - 1, 0)
    top, at = y, len(out)
    for op, rows in cost_rows(gate):
        row_label(out, y, f"op: {op}", bold=True)
        y += ROW
        for name, kind, e in rows:
            row_label(out, y, name)
            ns = e.get("median_ns_per_call")
            if ns is not None:
                mark = e.get("verdict") if e.get("budget_ns") else None
                bar(out, axis, y, ns, COLORS[kind], label_ns(ns),
                    e.get("median_ci", [None, None]), mark if mark in MARKS else None)
                q = e.get("quantile_ns_per_call")
                if q is not None:
                    x = axis.x(q)
                    out.append(f'<line x1="{x:.1f}" y1="{y + 1}" x2="{x:.1f}" y2="{y + ROW - 1}" '
                               'stroke="black" stroke-width="2"/>')
            y += ROW
        y += GAP
    for i, (kind, ns) in enumerate(budgets):
        x = axis.x(ns)
        label_y = top - 12 - 16 * (len(budgets) - 1 - i)
        out.append(f'<line x1="{x:.1f}" y1="{label_y + 4}" x2="{x:.1f}" y2="{y}" '
                   f'stroke="{COLORS[kind]}" stroke-dasharray="6,4" stroke-width="1.5"/>')
        out.append(f'<text x="{x + 3:.1f}" y="{label_y}" fill="{COLORS[kind]}">'
                   f'{kind} budget {label_ns(ns)}</text>')
    grid(out, at, axis, top - 8, y, label_ns)
    return y + 30


def ratio_section(out, gate, y):
    ratios = [r for e in gate["cases"].values() for r in e.get("ratios", {}).values()]
    axis = LogAxis.spanning([v for r in ratios for v in [r["median"]] + (r["ci"] or [])],
                            0.1, 10)
    out.append(f'<text x="{WIDTH / 2}" y="{y}" text-anchor="middle" font-size="15">'
               'Paired ratio, case / baseline (median of interleaved pairs, 95 % interval)'
               '</text>')
    y += 20
    top, at = y, len(out)
    for name, e in gate["cases"].items():
        for base, r in e.get("ratios", {}).items():
            row_label(out, y, f"{name} / {base.split('/', 1)[-1]}")
            bar(out, axis, y, r["median"], COLORS[e["kind"]], label_ratio(r["median"]), r["ci"])
            y += ROW
    x = axis.x(1)
    out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y}" stroke="black"/>')
    grid(out, at, axis, top - 4, y, label_ratio)
    return y + 30


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    body = []
    if os.path.exists(sys.argv[1]):
        with open(sys.argv[1]) as f:
            gate = json.load(f)
        y = legend(body, TOP - 8)
        y = cost_section(body, gate, y + 10)
        y = ratio_section(body, gate, y + 10)
        q = gate.get("method", {}).get("quantile")
        tick = f", tick: the {q:.0%} quantile" if q else ""
    else:
        body.append(f'<text x="{WIDTH / 2}" y="{TOP + 20}" text-anchor="middle">'
                    'No benchmark data: the benchmarks did not run to the end '
                    '(see the scorecard\'s summary)</text>')
        y, tick = TOP + 60, ""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{y}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">'
           f'Per-call cost (median, 95 % interval{tick}; log scale)</text>'] + body + ["</svg>"]
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
