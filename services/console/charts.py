"""Charts as server-side SVG (no chart library, no script): pure functions from numbers to markup."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

COLOURS = {
    "requested": "#9aa5b1",
    "sent": "#3b82f6",
    "delivered": "#10b981",
    "read": "#8b5cf6",
    "failed": "#ef4444",
    "inbound": "#f59e0b",
    "value": "#3b82f6",
}
W, H, PAD_L, PAD_B, PAD_T = 640, 220, 44, 34, 12


def _empty(title: str) -> Markup:
    return Markup(
        f'<svg class="chart empty" role="img" aria-label="{escape(title)}: no data" viewBox="0 0 {W} 40" '
        f'data-points="0"><text x="0" y="24" class="tick">No data for this period</text></svg>'
    )


def _axis(top: float) -> str:
    out = []
    for i in range(5):
        v = top * i / 4
        y = H - PAD_B - (H - PAD_B - PAD_T) * i / 4
        label = f"{v:.0f}" if top >= 8 or v == int(v) else f"{v:.1f}"
        out.append(f'<line x1="{PAD_L}" x2="{W}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    return "".join(out)


def stacked_bars(title: str, labels: Sequence[str], series: dict[str, Sequence[float]]) -> Markup:
    """One bar per label, stacked by series (e.g. messages per day by status)."""
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(title)
    top = max(totals) or 1
    if all(float(v).is_integer() for s in series.values() for v in s):
        top = max(4, -(-int(top) // 4) * 4)  # whole-number ticks for counts
    step = (W - PAD_L) / len(labels)
    bar = max(2.0, step * 0.7)
    plot = H - PAD_B - PAD_T
    parts = [_axis(top)]
    for i, label in enumerate(labels):
        x = PAD_L + i * step + (step - bar) / 2
        y = H - PAD_B
        for name, values in series.items():
            v = values[i]
            if not v:
                continue
            h = plot * v / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS.get(name, COLOURS["value"])}" data-series="{escape(name)}" data-value="{v:g}">'
                f"<title>{escape(label)} · {escape(name)}: {v:g}</title></rect>"
            )
        if len(labels) <= 16 or i % max(1, len(labels) // 8) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{H - PAD_B + 16}" text-anchor="middle" class="tick">'
                f"{escape(label[-5:])}</text>"
            )
    legend = "".join(
        f'<span class="key"><i style="background:{COLOURS.get(n, COLOURS["value"])}"></i>{escape(n)}</span>'
        for n in series
    )
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {W} {H}" '
        f'data-points="{len(labels)}">{"".join(parts)}</svg><div class="legend">{legend}</div>'
    )


def bars(title: str, labels: Sequence[str], values: Sequence[float | None], series: str = "value") -> Markup:
    return stacked_bars(title, labels, {series: [v or 0 for v in values]})


def horizontal_bars(title: str, rows: Sequence[tuple[str, float]]) -> Markup:
    """Labelled horizontal bars, largest first (e.g. failures by reason)."""
    rows = [r for r in rows if r[1]]
    if not rows:
        return _empty(title)
    top = max(v for _, v in rows)
    row_h = 26
    height = row_h * len(rows) + 8
    label_w = 260
    parts = []
    for i, (label, v) in enumerate(rows):
        y = 4 + i * row_h
        w = (W - label_w - 50) * v / top
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" class="tick">{escape(label[:40])}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{COLOURS["failed"]}" '
            f'data-value="{v:g}"><title>{escape(label)}: {v:g}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 17}" class="tick">{v:g}</text>'
        )
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {W} {height}" '
        f'data-points="{len(rows)}">{"".join(parts)}</svg>'
    )
