"""Small inline-SVG charts, so the report needs no CDN and works offline.

Each function returns an SVG string (or a short 'no data' note) sized by a viewBox, so charts
scale with the page. Hover titles carry the exact numbers.
"""
from __future__ import annotations

from html import escape

COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"]
NO_DATA = "<p class='muted'>no data</p>"


def _svg(width: float, height: float, label: str) -> str:
    return (f"<svg class='chart' viewBox='0 0 {width:g} {height:g}' width='100%' style='max-width:{width:g}px' "
            f"role='img' aria-label='{escape(label)}' xmlns='http://www.w3.org/2000/svg'>")


def _nice(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def line_chart(series: dict[str, list[tuple[float, float]]], width=640, height=240, ylabel="loss",
               xlabel="step") -> str:
    series = {k: sorted(v) for k, v in series.items() if v}
    points = [p for s in series.values() for p in s]
    if not points:
        return NO_DATA
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1
    margin = (y1 - y0) * 0.08 or 0.5
    y0, y1 = y0 - margin, y1 + margin
    left, right, top, bottom = 52, 16, 14, 34
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: top + (y1 - y) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    parts = [_svg(width, height, f"{ylabel} by {xlabel}")]
    for k in range(5):   # horizontal grid with y labels
        y = y0 + (y1 - y0) * k / 4
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{sy(y):.1f}' y2='{sy(y):.1f}' stroke='#e2e8f0'/>"
                     f"<text x='{left - 6}' y='{sy(y) + 4:.1f}' font-size='11' text-anchor='end' fill='#475569'>{_nice(y)}</text>")
    parts.append(f"<text x='{left}' y='{height - 8}' font-size='11' fill='#475569'>{xlabel} {x0:g}</text>"
                 f"<text x='{width - right}' y='{height - 8}' font-size='11' text-anchor='end' fill='#475569'>{x1:g}</text>")
    for k, (name, pts) in enumerate(series.items()):
        c = COLORS[k % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f"<polyline fill='none' stroke='{c}' stroke-width='2' points='{path}'/>")
        for x, y in pts if len(pts) <= 40 else pts[-1:]:
            parts.append(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3' fill='{c}'><title>{escape(name)} "
                         f"step {x:g}: {y:.4f}</title></circle>")
        parts.append(f"<rect x='{width - right - 150}' y='{top + 4 + 16 * k}' width='10' height='10' fill='{c}'/>"
                     f"<text x='{width - right - 135}' y='{top + 13 + 16 * k}' font-size='12'>{escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(values: dict[str, float], width=640, bar_h=20, fmt="{:g}", color="#60a5fa", label_w=230) -> str:
    """Horizontal bars, one per key."""
    if not values:
        return NO_DATA
    top = max(values.values()) or 1
    h = bar_h * len(values) + 6
    parts = [_svg(width, h, "bar chart")]
    for i, (k, v) in enumerate(values.items()):
        w = max(0.0, (width - label_w - 70) * v / top)
        y = i * bar_h + 3
        parts.append(f"<text x='{label_w - 6}' y='{y + 13}' font-size='12' text-anchor='end'>{escape(str(k))[:36]}</text>"
                     f"<rect x='{label_w}' y='{y}' width='{w:.1f}' height='{bar_h - 5}' rx='2' fill='{color}'>"
                     f"<title>{escape(str(k))}: {fmt.format(v)}</title></rect>"
                     f"<text x='{label_w + w + 5:.1f}' y='{y + 13}' font-size='12'>{fmt.format(v)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def stacked_bars(rows: dict[str, dict[str, float]], colors: dict[str, str], width=640, bar_h=24, label_w=140) -> str:
    """One bar per row, split into its parts (e.g. kept / rejected per source), with a legend."""
    if not rows:
        return NO_DATA
    top = max(sum(parts.values()) for parts in rows.values()) or 1
    h = bar_h * len(rows) + 26
    out = [_svg(width, h, "stacked bar chart")]
    for i, (name, parts) in enumerate(rows.items()):
        y, x = i * bar_h + 3, float(label_w)
        out.append(f"<text x='{label_w - 6}' y='{y + 15}' font-size='12' text-anchor='end'>{escape(str(name))[:20]}</text>")
        for part, v in parts.items():
            w = (width - label_w - 20) * v / top
            out.append(f"<rect x='{x:.1f}' y='{y}' width='{w:.1f}' height='{bar_h - 6}' fill='{colors.get(part, '#94a3b8')}'>"
                       f"<title>{escape(str(name))} {escape(part)}: {v:g}</title></rect>")
            if w > 30:
                out.append(f"<text x='{x + 4:.1f}' y='{y + 14}' font-size='11' fill='#fff'>{v:g}</text>")
            x += w
    for k, (part, c) in enumerate(colors.items()):
        out.append(f"<rect x='{label_w + 90 * k}' y='{h - 16}' width='10' height='10' fill='{c}'/>"
                   f"<text x='{label_w + 14 + 90 * k}' y='{h - 7}' font-size='11'>{escape(part)}</text>")
    out.append("</svg>")
    return "".join(out)


def histogram(groups: dict[str, list[int]] | list[int], bins=24, width=640, height=180, unit="tokens") -> str:
    """Counts per length bin; several groups (e.g. domain, general) share the bins, side by side."""
    if not isinstance(groups, dict):
        groups = {"examples": groups}
    groups = {k: v for k, v in groups.items() if v}
    values = [v for vs in groups.values() for v in vs]
    if not values:
        return NO_DATA
    lo, hi = min(values), max(values)
    step = max(1, -(-(hi - lo + 1) // bins))
    n_bins = -(-(hi - lo + 1) // step)
    counts = {k: [0] * n_bins for k in groups}
    for k, vs in groups.items():
        for v in vs:
            counts[k][(v - lo) // step] += 1
    top = max(max(c) for c in counts.values()) or 1
    left, bottom, top_pad = 36, 22, 18
    bw = (width - left - 10) / n_bins
    sub = bw / len(groups)
    parts = [_svg(width, height, f"histogram of lengths in {unit}"),
             f"<text x='{left - 4}' y='{top_pad}' font-size='11' text-anchor='end' fill='#475569'>{top}</text>"]
    for g, (k, cs) in enumerate(counts.items()):
        c = COLORS[(g + 2) % len(COLORS)] if len(groups) > 1 else "#34d399"
        for i, n in enumerate(cs):
            bh = (height - bottom - top_pad) * n / top
            parts.append(f"<rect x='{left + i * bw + g * sub:.1f}' y='{height - bottom - bh:.1f}' width='{max(1.0, sub - 1):.1f}' "
                         f"height='{bh:.1f}' fill='{c}'><title>{escape(k)} {lo + i * step}-{lo + (i + 1) * step - 1} "
                         f"{unit}: {n}</title></rect>")
        if len(groups) > 1:
            parts.append(f"<rect x='{width - 170}' y='{4 + 15 * g}' width='10' height='10' fill='{c}'/>"
                         f"<text x='{width - 155}' y='{13 + 15 * g}' font-size='12'>{escape(k)} ({len(groups[k])})</text>")
    parts.append(f"<text x='{left}' y='{height - 6}' font-size='11' fill='#475569'>{lo}</text>"
                 f"<text x='{width - 10}' y='{height - 6}' font-size='11' text-anchor='end' fill='#475569'>{lo + n_bins * step - 1} {unit}</text></svg>")
    return "".join(parts)


def interval(value: float, low: float, high: float, width=640, label="tuned win rate") -> str:
    """A 0-100% axis with the estimate and its confidence interval; 50% (no preference) marked."""
    left, right, h = 20, 20, 58
    sx = lambda v: left + v * (width - left - right)  # noqa: E731
    parts = [_svg(width, h, f"{label} {100 * value:.0f}% with its confidence interval"),
             f"<line x1='{left}' x2='{width - right}' y1='30' y2='30' stroke='#cbd5e1' stroke-width='6' stroke-linecap='round'/>",
             f"<line x1='{sx(0.5):.1f}' x2='{sx(0.5):.1f}' y1='16' y2='44' stroke='#64748b' stroke-dasharray='3,3'/>",
             f"<text x='{sx(0.5):.1f}' y='56' font-size='11' text-anchor='middle' fill='#475569'>50%: no preference</text>",
             f"<line x1='{sx(low):.1f}' x2='{sx(high):.1f}' y1='30' y2='30' stroke='#2563eb' stroke-width='6'/>",
             f"<circle cx='{sx(value):.1f}' cy='30' r='7' fill='#1d4ed8'><title>{label} {100 * value:.1f}% "
             f"(95% CI {100 * low:.1f}-{100 * high:.1f}%)</title></circle>",
             f"<text x='{sx(value):.1f}' y='14' font-size='12' text-anchor='middle' font-weight='600'>{100 * value:.0f}%</text>",
             f"<text x='{left}' y='56' font-size='11' fill='#475569'>0% (base always)</text>",
             f"<text x='{width - right}' y='56' font-size='11' text-anchor='end' fill='#475569'>100% (tuned always)</text>",
             "</svg>"]
    return "".join(parts)


def grouped_bars(groups: dict[str, dict[str, float]], width=560, height=200, unit="",
                 colors=("#94a3b8", "#2563eb", "#16a34a")) -> str:
    """Vertical bars side by side within each group (e.g. base vs tuned on domain and general loss)."""
    groups = {g: {k: v for k, v in bars.items() if v is not None} for g, bars in groups.items()}
    groups = {g: bars for g, bars in groups.items() if bars}
    if not groups:
        return NO_DATA
    names = list(dict.fromkeys(k for bars in groups.values() for k in bars))
    top = max(v for bars in groups.values() for v in bars.values()) or 1
    left, bottom, top_pad = 20, 24, 22
    gw = (width - left - 10) / len(groups)
    bw = min(70.0, (gw - 30) / len(names))
    parts = [_svg(width, height, "grouped bar chart")]
    for gi, (g, bars) in enumerate(groups.items()):
        x0 = left + gi * gw + (gw - bw * len(names)) / 2
        for k, name in enumerate(names):
            if name not in bars:
                continue
            v = bars[name]
            bh = (height - bottom - top_pad) * v / top
            x, y = x0 + k * bw, height - bottom - bh
            parts.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{bw - 6:.1f}' height='{bh:.1f}' rx='2' fill='{colors[k % len(colors)]}'>"
                         f"<title>{escape(g)} {escape(name)}: {v:.4g}{unit}</title></rect>"
                         f"<text x='{x + (bw - 6) / 2:.1f}' y='{y - 5:.1f}' font-size='12' text-anchor='middle'>{v:.3g}</text>")
        parts.append(f"<text x='{left + gi * gw + gw / 2:.1f}' y='{height - 6}' font-size='12' text-anchor='middle' "
                     f"font-weight='600'>{escape(g)}</text>")
    for k, name in enumerate(names):
        parts.append(f"<rect x='{width - 70}' y='{4 + 15 * k}' width='10' height='10' fill='{colors[k % len(colors)]}'/>"
                     f"<text x='{width - 55}' y='{13 + 15 * k}' font-size='12'>{escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def paired_interval(diff: float | None, low: float | None, high: float | None, significant: str | None = None,
                    threshold: float | None = None, width=240, height=30, label="difference") -> str:
    """A small inline plot of a paired difference and its 95% interval on an axis that holds 0 (a dashed
    line) and the gate's threshold (dotted, red): green when significantly better, red when significantly
    worse, grey otherwise."""
    if diff is None:
        return ""
    points = [diff, 0.0] + [v for v in (low, high, threshold) if v is not None]
    lo, hi = min(points), max(points)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    sx = lambda v: 8 + (v - lo) / (hi - lo) * (width - 16)  # noqa: E731
    color = {"better": "#16a34a", "worse": "#dc2626"}.get(significant or "", "#64748b")
    ci = f" (95% CI {low:+.4g} to {high:+.4g})" if low is not None else " (no interval: too few items)"
    parts = [f"<svg class='ci' viewBox='0 0 {width} {height}' width='{width}' height='{height}' role='img' "
             f"aria-label='{escape(label)} {diff:+.4g}{escape(ci)}' xmlns='http://www.w3.org/2000/svg'>",
             f"<line x1='8' x2='{width - 8}' y1='{height / 2}' y2='{height / 2}' stroke='#e2e8f0' stroke-width='2'/>",
             f"<line x1='{sx(0):.1f}' x2='{sx(0):.1f}' y1='3' y2='{height - 3}' stroke='#64748b' stroke-dasharray='3,2'>"
             f"<title>0: no difference</title></line>"]
    if threshold is not None:
        parts.append(f"<line x1='{sx(threshold):.1f}' x2='{sx(threshold):.1f}' y1='3' y2='{height - 3}' stroke='#dc2626' "
                     f"stroke-dasharray='1,2' stroke-width='2'><title>threshold {threshold:+.4g}</title></line>")
    if low is not None:
        parts.append(f"<line x1='{sx(low):.1f}' x2='{sx(high):.1f}' y1='{height / 2}' y2='{height / 2}' stroke='{color}' "
                     f"stroke-width='5' stroke-linecap='round' opacity='0.55'/>")
    parts.append(f"<circle cx='{sx(diff):.1f}' cy='{height / 2}' r='5' fill='{color}'><title>{escape(label)} "
                 f"{diff:+.4g}{ci}</title></circle></svg>")
    return "".join(parts)
