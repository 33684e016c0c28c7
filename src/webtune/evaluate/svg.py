"""Tiny inline-SVG charts, so the report needs no CDN and works offline."""
from __future__ import annotations

from html import escape


def line_chart(series: dict[str, list[tuple[float, float]]], width=560, height=220, ylabel="loss") -> str:
    points = [p for s in series.values() for p in s]
    if not points:
        return "<p class='muted'>no data</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs) or 1, min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pad = 40
    sx = lambda x: pad + (x - x0) / (x1 - x0) * (width - 2 * pad)  # noqa: E731
    sy = lambda y: height - pad + (y0 - y) / (y1 - y0) * (height - 2 * pad)  # noqa: E731
    colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"]
    parts = [f"<svg viewBox='0 0 {width} {height}' width='{width}' height='{height}' role='img' aria-label='{escape(ylabel)} chart'>",
             f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='#999'/>",
             f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{height - pad}' stroke='#999'/>",
             f"<text x='4' y='{pad - 8}' font-size='11'>{escape(ylabel)} {y1:.2f}</text>",
             f"<text x='4' y='{height - pad + 4}' font-size='11'>{y0:.2f}</text>",
             f"<text x='{width - pad - 30}' y='{height - 8}' font-size='11'>step {x1:g}</text>"]
    for k, (name, pts) in enumerate(series.items()):
        c = colors[k % len(colors)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f"<polyline fill='none' stroke='{c}' stroke-width='2' points='{path}'/>")
        if len(pts) == 1:
            parts.append(f"<circle cx='{sx(pts[0][0]):.1f}' cy='{sy(pts[0][1]):.1f}' r='3' fill='{c}'/>")
        parts.append(f"<text x='{width - pad - 120}' y='{pad + 14 * k}' font-size='12' fill='{c}'>{escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(values: dict[str, float], width=560, bar_h=18, fmt="{:g}") -> str:
    if not values:
        return "<p class='muted'>no data</p>"
    top = max(values.values()) or 1
    label_w = 200
    h = bar_h * len(values) + 10
    parts = [f"<svg viewBox='0 0 {width} {h}' width='{width}' height='{h}' role='img'>"]
    for i, (k, v) in enumerate(values.items()):
        w = (width - label_w - 60) * v / top
        y = i * bar_h + 4
        parts.append(f"<text x='0' y='{y + 12}' font-size='11'>{escape(str(k))[:32]}</text>"
                     f"<rect x='{label_w}' y='{y}' width='{w:.1f}' height='{bar_h - 4}' fill='#60a5fa'/>"
                     f"<text x='{label_w + w + 4:.1f}' y='{y + 12}' font-size='11'>{fmt.format(v)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: list[int], bins=20, width=560, height=160) -> str:
    if not values:
        return "<p class='muted'>no data</p>"
    lo, hi = min(values), max(values)
    step = max(1, (hi - lo + bins) // bins)
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, (v - lo) // step)] += 1
    top = max(counts) or 1
    bw = (width - 40) / bins
    parts = [f"<svg viewBox='0 0 {width} {height}' width='{width}' height='{height}' role='img'>"]
    for i, c in enumerate(counts):
        bh = (height - 30) * c / top
        parts.append(f"<rect x='{20 + i * bw:.1f}' y='{height - 20 - bh:.1f}' width='{bw - 2:.1f}' height='{bh:.1f}' fill='#34d399'>"
                     f"<title>{lo + i * step}-{lo + (i + 1) * step - 1}: {c}</title></rect>")
    parts.append(f"<text x='20' y='{height - 4}' font-size='11'>{lo}</text>"
                 f"<text x='{width - 60}' y='{height - 4}' font-size='11'>{hi} tokens</text></svg>")
    return "".join(parts)
