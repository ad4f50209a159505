"""Interactive report figures: each :class:`~e3bench.report.figures.Figure` as a Plotly figure
in the HTML page. Hovering a mark shows its configuration and the value with its 95 % interval;
clicking a legend entry hides or shows a series (a precision, a backend, the Pareto front).

The figure JSON is written by hand (numbers rounded to 4 significant digits, only the data the
marks need) and drawn by plotly.js, which the page loads once from ``plotly.min.js`` beside
``report.html`` (:func:`write_plotlyjs`, the bundle of the ``plotly`` package: works offline, and
a report of many figures stays small). Text from records is HTML-escaped (Plotly renders a
subset of HTML in labels) and ``<`` never appears raw inside the page's ``<script>``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e3bench.core.errors import require
from e3bench.core.fsutil import atomic_write_text
from e3bench.report.figures import COLOURS, FRONT, Figure, Mark, Panel
from e3bench.report.stats import Interval

#: The plotly.js bundle's file name, beside ``report.html``.
PLOTLY_JS = "plotly.min.js"
_CONFIG = {"displaylogo": False, "responsive": True,
           "toImageButtonOptions": {"format": "png", "scale": 2}}  # fmt: skip


def write_plotlyjs(out_dir: Path) -> Path:
    """Write the installed plotly package's ``plotly.min.js`` into ``out_dir`` (once per report);
    :class:`~e3bench.core.errors.MissingExtra` (``report``) without plotly."""
    require("plotly", "report", "Interactive report figures")
    from plotly.offline import get_plotlyjs

    path = out_dir / PLOTLY_JS
    atomic_write_text(path, get_plotlyjs())
    return path


def _r(x: float | None) -> float | None:
    """``x`` to 4 significant digits (None for missing or non-finite)."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.4g}")


def _err(ivs: Sequence[Interval]) -> dict[str, Any]:
    plus = [_r(iv.high - iv.estimate) if iv.known else None for iv in ivs]
    if not any(v is not None for v in plus):
        return {"visible": False}
    return {"type": "data", "symmetric": False, "array": plus, "thickness": 1.2, "width": 3,
            "arrayminus": [_r(iv.estimate - iv.low) if iv.known else None for iv in ivs]}  # fmt: skip


def _hover(m: Mark) -> str:
    return "<br>".join(html.escape(line) for line in m.hover.splitlines())


def _series(marks: Sequence[Mark]) -> dict[str, str]:
    names = list(dict.fromkeys(m.series for m in marks))
    return {s: COLOURS[i % len(COLOURS)] for i, s in enumerate(names)}


def _traces(p: Panel, axis: str, legend: bool) -> list[dict]:
    xa, ya = "x" + axis, "y" + axis
    out: list[dict] = []
    colours = _series(p.marks)
    base = {"xaxis": xa, "yaxis": ya, "hovertemplate": "%{text}<extra></extra>", "showlegend": legend}
    for s, colour in colours.items():
        ms = [m for m in p.marks if m.series == s]
        t = {**base, "name": html.escape(s), "legendgroup": html.escape(s), "text": [_hover(m) for m in ms]}
        if p.kind == "bar":
            out.append({**t, "type": "bar", "orientation": "h", "marker": {"color": colour}, "textposition": "none",
                        "x": [_r(m.y.estimate) for m in ms], "y": [html.escape(str(m.cat)) for m in ms],
                        "error_x": _err([m.y for m in ms])})  # fmt: skip
        elif p.kind == "line":
            ms = ms if p.in_order else sorted(ms, key=lambda m: m.cat)
            t["text"] = [_hover(m) for m in ms]  # in the points' order (it was the marks' order before sorting)
            if p.in_order:  # each point names its level; the hover text moves to hovertext
                t = {**t, "hovertext": t["text"], "text": [html.escape(str(m.label)) for m in ms],
                     "hovertemplate": "%{hovertext}<extra></extra>", "textposition": "top center"}  # fmt: skip
            out.append({**t, "type": "scatter", "mode": "lines+markers+text" if p.in_order else "lines+markers",
                        "line": {"color": colour}, "x": [m.cat for m in ms], "y": [_r(m.y.estimate) for m in ms],
                        "error_y": _err([m.y for m in ms])})  # fmt: skip
        elif p.kind == "scatter":
            out.append({**t, "type": "scatter", "mode": "markers",
                        "marker": {"color": colour, "size": 5 if len(p.marks) > 200 else 9, "opacity": 0.8},
                        "x": [_r(m.x.estimate) for m in ms], "y": [_r(m.y.estimate) for m in ms],
                        "error_x": _err([m.x for m in ms]), "error_y": _err([m.y for m in ms])})  # fmt: skip
    if p.kind == "box":
        for cat in dict.fromkeys(m.cat for m in p.marks):
            vals = [_r(m.y.estimate) for m in p.marks if m.cat == cat]
            out.append({"type": "box", "name": html.escape(str(cat)), "y": vals, "xaxis": xa, "yaxis": ya,
                        "boxpoints": False, "marker": {"color": colours.get(str(cat), COLOURS[0])},
                        "legendgroup": html.escape(str(cat)), "showlegend": legend})  # fmt: skip
    if p.kind == "scatter":
        front = sorted((m for m in p.marks if m.front), key=lambda m: m.x.estimate)
        out.append({**base, "type": "scatter", "mode": "lines+markers", "name": "Pareto front", "legendgroup": "front",
                    "line": {"color": FRONT, "dash": "dash", "width": 1.5},
                    "marker": {"size": 13, "color": "rgba(0,0,0,0)", "line": {"color": FRONT, "width": 2}},
                    "x": [_r(m.x.estimate) for m in front], "y": [_r(m.y.estimate) for m in front],
                    "text": [_hover(m) for m in front]})  # fmt: skip
    return out


def _domains(spec: Figure) -> list[tuple[list[float], list[float]]]:
    """(x domain, y domain) of each panel: bar panels one above the other (heights in
    proportion to their bars), other panels side by side."""
    n = len(spec.panels)
    if spec.panels[0].kind != "bar":
        gap = 0.08
        w = (1 - gap * (n - 1)) / n
        return [([i * (w + gap), i * (w + gap) + w], [0.0, 1.0]) for i in range(n)]
    gap = 0.12 / n if n > 1 else 0.0
    sizes = [len(p.marks) + 1 for p in spec.panels]
    scale = (1 - gap * (n - 1)) / sum(sizes)
    out, top = [], 1.0
    for k in sizes:
        out.append(([0.0, 1.0], [max(0.0, top - k * scale), top]))
        top -= k * scale + gap
    return out


def figure_json(spec: Figure) -> dict[str, Any]:
    """The Plotly figure (``data``, ``layout``) of ``spec``: one trace per series and panel, bar
    panels one above the other (categories in the spec's order, top to bottom), other panels
    side by side; the legend shows each series once."""
    n = len(spec.panels)
    title = spec.title if n > 1 else ", ".join(t for t in (spec.title, spec.panels[0].title) if t)
    data: list[dict] = []
    layout: dict[str, Any] = {"title": {"text": html.escape(title), "font": {"size": 15}},
                              "margin": {"l": 10, "r": 10, "t": 70, "b": 50}, "hovermode": "closest",
                              "legend": {"font": {"size": 11}}, "template": None, "plot_bgcolor": "#fff",
                              "annotations": []}  # fmt: skip
    bars = sum(len(p.marks) for p in spec.panels if p.kind == "bar")
    layout["height"] = max(380, 100 + 24 * bars + 60 * n) if bars else 440
    seen: set[str] = set()
    for i, (p, (xd, yd)) in enumerate(zip(spec.panels, _domains(spec), strict=True), start=1):
        axis = "" if i == 1 else str(i)
        traces = _traces(p, axis, legend=True)
        for t in traces:  # one legend entry per series over all panels; clicking it toggles them all
            t["showlegend"] = t.get("legendgroup", t.get("name")) not in seen
            seen.add(t.get("legendgroup", t.get("name")))
        data += traces
        grid = {"gridcolor": "#e5e5e5", "zeroline": False, "automargin": True, "linecolor": "#999", "showline": True}
        xaxis = {**grid, "domain": xd, "anchor": "y" + axis, "title": {"text": html.escape(p.x_label)}}
        yaxis = {**grid, "domain": yd, "anchor": "x" + axis, "title": {"text": html.escape(p.y_label)}}
        if p.log_x:
            xaxis.update(type="log", dtick=math.log10(2) if p.kind == "line" else None)
        if p.y_from_zero:
            yaxis["rangemode"] = "tozero"
        if p.kind == "bar":
            if all(m.y.estimate >= 0 for m in p.marks):
                xaxis["rangemode"] = "nonnegative"
            cats = [html.escape(str(m.cat)) for m in p.marks]
            yaxis.update(categoryorder="array", categoryarray=cats, autorange="reversed")
        layout["xaxis" + axis] = xaxis
        layout["yaxis" + axis] = yaxis
        if n > 1:
            layout["annotations"].append({"text": html.escape(p.title), "xref": "paper", "yref": "paper",
                                          "x": (xd[0] + xd[1]) / 2, "y": yd[1], "yanchor": "bottom",
                                          "showarrow": False, "font": {"size": 12}})  # fmt: skip
    if spec.panels[0].kind == "box":
        layout["showlegend"] = False
    return {"data": data, "layout": layout}


def div(spec: Figure) -> str:
    """An HTML ``<div>`` and the ``<script>`` that draws ``spec`` into it with plotly.js (which
    the page must load first, see :data:`PLOTLY_JS`)."""
    payload = json.dumps(figure_json(spec), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    cfg = json.dumps(_CONFIG, separators=(",", ":"))
    fid = f"fig-{spec.name}"
    return (f"<div id='{fid}' class='plot'></div><script>(function(){{var f={payload};"
            f"Plotly.newPlot('{fid}',f.data,f.layout,{cfg});}})();</script>")
