"""Small charts as SVG text, drawn on the server for the console's analytics page.

Server-side because the console has no build step and loads nothing from elsewhere (its CSP allows only its
own scripts): an SVG string needs no chart library in the browser, renders without JavaScript and is easy to
check in a test. Colours are presentation attributes rather than CSS, so each chart is a complete picture on
its own (the page may also style it). Every number drawn is also in a <title>, which browsers show on hover
and screen readers read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

__all__ = ["bar_chart", "line_chart", "nice_ceiling"]

WIDTH = 640
HEIGHT = 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 44, 40  # room above the axis for the title and the tallest bar's value
BAR = "#2f6f9f"
SERIES_COLOURS = ("#2f6f9f", "#c8553d", "#4f9d69", "#8a5a9e")
AXIS = "#8a8f98"
GRID = "#e3e6ea"
TEXT = "#30343b"
MAX_X_LABELS = 12


def nice_ceiling(value: float) -> float:
    """The axis top: the smallest 1, 2, 4 or 8 times a power of ten at or above `value` (1 for nothing), so the
    quarter grid lines fall on round numbers (a top of 4 calls has lines at 1, 2 and 3, not 1.25)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 4, 8, 10):
        if value <= step * power + 1e-12 * power:
            return step * power
    return 10 * power


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.4g}"


def _svg(title: str, body: list[str], width: int, height: int) -> str:
    label = escape(title, quote=True)
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{label}" class="chart">',
            f"<title>{escape(title)}</title>",
            f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold" fill="{TEXT}">{escape(title)}</text>',
            *body,
            "</svg>",
        ]
    )


def _frame(top: float, width: int, height: int, fmt: Callable[[float], str]) -> list[str]:
    """Horizontal grid lines at 0, ¼, ½, ¾ and the top of the axis, with their values on the left."""
    plot_h = height - TOP - BOTTOM
    out = []
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}" stroke="{GRID if i else AXIS}"/>')
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{TEXT}">'
            f"{escape(fmt(top * i / 4))}</text>"
        )
    return out


def _x_labels(labels: Sequence[str], centre: Callable[[int], float], height: int) -> list[str]:
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    return [
        f'<text x="{centre(i):.1f}" y="{height - BOTTOM + 16}" font-size="11" text-anchor="middle" '
        f'fill="{TEXT}">{escape(label)}</text>'
        for i, label in enumerate(labels)
        if i % every == 0
    ]


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    fmt: Callable[[float], str] = _number,
    width: int = WIDTH,
    height: int = HEIGHT,
    colour: str = BAR,
) -> str:
    """One bar per label, heights proportional to the values (the axis starts at 0)."""
    if len(labels) != len(values):
        raise ValueError("one value per label")
    top = nice_ceiling(max(values, default=0))
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / max(1, len(values))
    body = _frame(top, width, height, fmt)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * max(0.0, value) / top
        x, y = LEFT + slot * i + slot * 0.15, TOP + plot_h - h
        body.append(
            f'<rect class="bar" x="{x:.2f}" y="{y:.2f}" width="{slot * 0.7:.2f}" height="{h:.2f}" fill="{colour}" '
            f'data-label="{escape(label, quote=True)}" data-value="{value}">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
        if len(values) <= MAX_X_LABELS:
            body.append(
                f'<text x="{x + slot * 0.35:.2f}" y="{y - 4:.2f}" font-size="11" text-anchor="middle" '
                f'fill="{TEXT}">{escape(fmt(value))}</text>'
            )
    body += _x_labels(labels, lambda i: LEFT + slot * (i + 0.5), height)
    return _svg(title, body, width, height)


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    fmt: Callable[[float], str] = _number,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """One line per series over the labels; a None is a gap (a day with nothing measured), not a zero."""
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r}: one value per label")
    measured = [v for values in series.values() for v in values if v is not None]
    top = nice_ceiling(max(measured, default=0))
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))

    def x_of(i: int) -> float:
        return LEFT + slot * (i + 0.5)

    def y_of(v: float) -> float:
        return TOP + plot_h - plot_h * v / top

    body = _frame(top, width, height, fmt)
    for n, (name, values) in enumerate(series.items()):
        colour = SERIES_COLOURS[n % len(SERIES_COLOURS)]
        runs: list[list[str]] = [[]]
        for i, v in enumerate(values):
            if v is None:
                runs.append([])
                continue
            runs[-1].append(f"{x_of(i):.2f},{y_of(v):.2f}")
            body.append(
                f'<circle class="point" cx="{x_of(i):.2f}" cy="{y_of(v):.2f}" r="3" fill="{colour}" '
                f'data-series="{escape(name, quote=True)}" data-value="{v}">'
                f"<title>{escape(name)} {escape(labels[i])}: {escape(fmt(v))}</title></circle>"
            )
        body += [
            f'<polyline class="line" points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2" '
            f'data-series="{escape(name, quote=True)}"/>'
            for run in runs
            if len(run) > 1
        ]
        legend_x = width - RIGHT - 90 * (len(series) - n)
        body.append(f'<rect x="{legend_x}" y="10" width="12" height="4" fill="{colour}"/>')
        body.append(f'<text x="{legend_x + 16}" y="16" font-size="11" fill="{TEXT}">{escape(name)}</text>')
    body += _x_labels(labels, x_of, height)
    return _svg(title, body, width, height)
