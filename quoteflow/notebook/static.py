"""Static Bokeh figures that survive a saved notebook, a reopened one and an HTML export.

A ``jupyter_bokeh`` widget lives in the kernel: once the kernel is gone (the notebook was
saved, closed and reopened, or exported to HTML) all that is left of it is "Error
displaying widget: model not found". A diagnostics plot does not need a kernel, so it is
shown as a self-contained HTML document instead: the figure's JSON and BokehJS *inline*
(no CDN: it works offline) inside an ``<iframe srcdoc=...>``. The iframe keeps this copy
of BokehJS away from the one the live widgets use in the same page.

The price is size: BokehJS is about 1.3 MB per static figure in the saved notebook (the
repository stores notebooks with outputs stripped, scripts/strip_notebooks.py).
"""

from __future__ import annotations

import html
from typing import Any

from bokeh.embed import file_html
from bokeh.models import GridPlot, LayoutDOM, Plot
from bokeh.models.layouts import Column, Row
from bokeh.resources import INLINE

__all__ = ["StaticFigure", "static_figure"]

#: Room for the toolbar beside a figure and for the iframe's own margin, in pixels.
_TOOLBAR_PX = 40
_MARGIN_PX = 24


def _size(layout: Any) -> tuple[int, int]:
    """Outer (width, height) in pixels of a layout of fixed-size figures."""
    if isinstance(layout, Plot):
        return int(layout.width or 600), int(layout.height or 600)
    if isinstance(layout, GridPlot):
        widths: dict[int, int] = {}
        heights: dict[int, int] = {}
        for item in layout.children:
            child, r, c = item[0], item[1], item[2]  # (figure, row, col[, rowspan, colspan])
            w, h = _size(child)
            widths[c] = max(widths.get(c, 0), w)
            heights[r] = max(heights.get(r, 0), h)
        return sum(widths.values()) + _TOOLBAR_PX, sum(heights.values())
    if isinstance(layout, Row):
        sizes = [_size(c) for c in layout.children]
        return sum(w for w, _ in sizes), max((h for _, h in sizes), default=0)
    if isinstance(layout, Column):
        sizes = [_size(c) for c in layout.children]
        return max((w for w, _ in sizes), default=0), sum(h for _, h in sizes)
    width = getattr(layout, "width", None) or 600
    height = getattr(layout, "height", None) or 400
    return int(width), int(height)


class StaticFigure:
    """A Bokeh layout frozen into self-contained HTML (see the module docstring).

    Parameters
    ----------
    layout
        The Bokeh figure or layout.
    title
        Document title (also the iframe's accessible name).

    Attributes
    ----------
    html
        The standalone HTML document (BokehJS inline).
    width, height
        Size of the iframe in pixels.
    """

    def __init__(self, layout: LayoutDOM, title: str = "quoteflow figure") -> None:
        self.title = title
        self.html = file_html(layout, INLINE, title=title)
        width, height = _size(layout)
        self.width = width + _MARGIN_PX
        self.height = height + _MARGIN_PX

    def _repr_html_(self) -> str:
        return (
            f"<iframe class='quoteflow-static' title='{html.escape(self.title, quote=True)}'"
            f" width='{self.width}' height='{self.height}'"
            " style='border:none;max-width:100%' "
            f'srcdoc="{html.escape(self.html, quote=True)}"></iframe>'
        )

    def __repr__(self) -> str:
        return f"<StaticFigure {self.title!r} {self.width}x{self.height}>"


def static_figure(layout: LayoutDOM, title: str = "quoteflow figure") -> StaticFigure:
    """Freeze ``layout`` into a :class:`StaticFigure` (display it as a cell's value).

    Parameters
    ----------
    layout
        A Bokeh figure or layout (e.g. :func:`quoteflow.notebook.diagnostics`).
    title
        Document title.

    Returns
    -------
    StaticFigure
        Shows as an iframe that needs neither the kernel nor the internet.
    """
    return StaticFigure(layout, title)
