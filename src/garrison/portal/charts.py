"""Server-rendered SVG line charts for results, vital signs and goals (no JavaScript).

A chart shows one or more series over time, the normal range (or a goal's target) as a shaded
band labelled in words, axis ticks and titles. It is an image (`role="img"` with a title and a
description); every page that shows one also shows the same numbers as a table, which is the
accessible alternative (WCAG 2.1 1.1.1). Out-of-range points are drawn with a different shape,
not only a different colour (WCAG 1.4.1), and each point carries its value as a tooltip.

Presentation attributes give sensible colours without any stylesheet; the portal's CSS may
restyle the classes. No inline `style` attribute is used, so the page's CSP (`style-src 'self'`)
holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 20, 64
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_LINE_COLOURS = ("#1d4e89", "#8a3b00", "#2f6b2f")
_DASHES = ("", "6 4", "2 3")


@dataclass(frozen=True, slots=True)
class Point:
    moment: datetime  # timezone-aware
    value: float
    label: str  # the tooltip: "5.9 % on 3 May 2024 (High)"
    flagged: bool = False  # outside the normal range (or short of a goal)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class Band:
    """The normal range or target: one bound may be open (a band to the chart's edge)."""

    low: float | None
    high: float | None
    label: str  # "Normal range: 4.0 to 5.6 %"


def nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about `ticks` intervals over `span`."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _value_domain(series: Sequence[Series], band: Band | None) -> tuple[float, float, float]:
    values = [p.value for s in series for p in s.points]
    if band is not None:
        values.extend(v for v in (band.low, band.high) if v is not None)
    low, high = min(values), max(values)
    if high == low:
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    step = nice_step(high - low)
    bottom = math.floor(low / step) * step
    top = math.ceil(high / step) * step
    # Keep points off the frame, without inventing negative values below a positive series.
    if low - bottom < step * 0.1 and (bottom - step >= 0 or low < 0):
        bottom -= step
    if top - high < step * 0.1:
        top += step
    return bottom, top, step


def _time_domain(series: Sequence[Series]) -> tuple[datetime, datetime]:
    moments = [p.moment for s in series for p in s.points]
    first, last = min(moments), max(moments)
    if last - first < timedelta(days=2):
        first, last = first - timedelta(days=15), last + timedelta(days=15)
    return first, last


def _tick_text(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def _date_text(moment: datetime, span: timedelta) -> str:
    if span > timedelta(days=120):
        return f"{_MONTHS[moment.month - 1]} {moment.year}"
    return f"{moment.day} {_MONTHS[moment.month - 1]}"


def _marker(x: float, y: float, index: int, flagged: bool, label: str) -> str:
    title = f"<title>{escape(label)}</title>"
    colour = _LINE_COLOURS[index % len(_LINE_COLOURS)]
    if flagged:
        # A diamond, bigger than the round normal points: the shape says "out of range".
        d = f"M{x:.1f} {y - 7:.1f} L{x + 7:.1f} {y:.1f} L{x:.1f} {y + 7:.1f} L{x - 7:.1f} {y:.1f} Z"
        return (
            f'<path class="chart-point chart-point-flagged chart-point-{index}" d="{d}" fill="{colour}" '
            f'stroke="#b00020" stroke-width="2">{title}</path>'
        )
    return (
        f'<circle class="chart-point chart-point-{index}" cx="{x:.1f}" cy="{y:.1f}" r="4.5" '
        f'fill="{colour}" stroke="#ffffff" stroke-width="1.5">{title}</circle>'
    )


def line_chart(
    *,
    chart_id: str,
    title: str,
    unit: str,
    series: Sequence[Series],
    band: Band | None = None,
    description: str = "",
) -> Markup | None:
    """An SVG line chart, or None when there is no point to draw. `chart_id` must be unique in
    the page (it names the title and description the image is labelled by)."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return None
    bottom, top, step = _value_domain(drawn, band)
    first, last = _time_domain(drawn)
    span = last - first
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(moment: datetime) -> float:
        return LEFT + plot_w * ((moment - first) / span)

    def y_of(value: float) -> float:
        return TOP + plot_h * (1 - (value - bottom) / (top - bottom))

    safe_id = escape(chart_id)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{safe_id}-title {safe_id}-desc" focusable="false">',
        f'<title id="{safe_id}-title">{escape(title)}</title>',
        f'<desc id="{safe_id}-desc">{escape(description)}</desc>',
    ]
    if band is not None and (band.low is not None or band.high is not None):
        band_top = y_of(min(band.high, top)) if band.high is not None else TOP
        band_bottom = y_of(max(band.low, bottom)) if band.low is not None else TOP + plot_h
        parts.append(
            f'<rect class="chart-band" x="{LEFT}" y="{band_top:.1f}" width="{plot_w}" '
            f'height="{max(0.0, band_bottom - band_top):.1f}" fill="#e2f0e4" stroke="#6b9e73" '
            f'stroke-dasharray="4 3" data-low="{band.low if band.low is not None else ""}" '
            f'data-high="{band.high if band.high is not None else ""}">'
            f"<title>{escape(band.label)}</title></rect>"
        )
        parts.append(
            f'<text class="chart-band-label" x="{LEFT + plot_w - 6}" y="{band_top + 14:.1f}" '
            f'text-anchor="end" font-size="14" fill="#2d5a34">{escape(band.label)}</text>'
        )
    # Horizontal grid lines with the value ticks.
    ticks = []
    value = bottom
    while value <= top + step / 1000:
        y = y_of(value)
        ticks.append(
            f'<line class="chart-grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#d8d8d8" stroke-width="1"/>'
            f'<text class="chart-tick" x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" '
            f'font-size="14" fill="#333333">{escape(_tick_text(value, step))}</text>'
        )
        value += step
    parts.extend(ticks)
    # Date ticks: the first and last reading and up to three between.
    count = 5 if span > timedelta(days=20) else 2
    for i in range(count):
        moment = first + span * (i / (count - 1))
        x = x_of(moment)
        anchor = "start" if i == 0 else "end" if i == count - 1 else "middle"
        parts.append(
            f'<line class="chart-axis" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + plot_h}" '
            f'y2="{TOP + plot_h + 5}" stroke="#333333"/>'
            f'<text class="chart-tick" x="{x:.1f}" y="{TOP + plot_h + 20}" text-anchor="{anchor}" '
            f'font-size="14" fill="#333333">{escape(_date_text(moment, span))}</text>'
        )
    parts.append(
        f'<line class="chart-axis" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" '
        f'y2="{TOP + plot_h}" stroke="#333333"/>'
        f'<line class="chart-axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#333333"/>'
    )
    parts.append(
        f'<text class="chart-axis-label" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 24}" '
        f'text-anchor="middle" font-size="15" fill="#222222">Date</text>'
    )
    if unit:
        middle = TOP + plot_h / 2
        parts.append(
            f'<text class="chart-axis-label" x="16" y="{middle:.1f}" text-anchor="middle" font-size="15" '
            f'fill="#222222" transform="rotate(-90 16 {middle:.1f})">{escape(unit)}</text>'
        )
    for index, line in enumerate(drawn):
        ordered = sorted(line.points, key=lambda p: p.moment)
        colour = _LINE_COLOURS[index % len(_LINE_COLOURS)]
        dash = _DASHES[index % len(_DASHES)]
        coordinates = " ".join(f"{x_of(p.moment):.1f},{y_of(p.value):.1f}" for p in ordered)
        if len(ordered) > 1:
            parts.append(
                f'<polyline class="chart-line chart-line-{index}" points="{coordinates}" fill="none" '
                f'stroke="{colour}" stroke-width="2"' + (f' stroke-dasharray="{dash}"' if dash else "") + "/>"
            )
        parts.extend(
            _marker(x_of(p.moment), y_of(p.value), index, p.flagged, f"{line.name}: {p.label}")
            for p in ordered
        )
    if len(drawn) > 1:  # a legend in words and line styles, not colour alone
        x = LEFT
        for index, line in enumerate(drawn):
            colour = _LINE_COLOURS[index % len(_LINE_COLOURS)]
            dash = _DASHES[index % len(_DASHES)]
            y = HEIGHT - 8
            parts.append(
                f'<line class="chart-legend chart-line-{index}" x1="{x}" x2="{x + 28}" y1="{y - 4}" '
                f'y2="{y - 4}" stroke="{colour}" stroke-width="2"'
                + (f' stroke-dasharray="{dash}"' if dash else "")
                + "/>"
                f'<text class="chart-legend-label" x="{x + 34}" y="{y}" font-size="14" '
                f'fill="#222222">{escape(line.name)}</text>'
            )
            x += 44 + 9 * len(line.name)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text above is escaped
