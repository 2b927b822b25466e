"""Live widgets that leave a static copy behind when their live part ends.

A widget's output in a saved notebook is only a reference to a model in the kernel: once
the kernel is gone (the notebook was saved, closed and reopened) JupyterLab shows "Error
displaying widget: model not found" in its place. So the live widgets of
:mod:`quoteflow.notebook` display themselves under an IPython *display id*, and
``freeze()`` replaces every output showing them with static HTML (``update_display``):
the saved notebook then holds that HTML, which needs no kernel.

:func:`live_display` does the same for any other widget (sliders, a box of widgets).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from IPython.display import DisplayHandle, display

__all__ = ["LiveDisplay", "live_display", "widget_text"]


class LiveDisplay:
    """A widget shown under display ids, each of which :meth:`freeze` turns static.

    Parameters
    ----------
    widget
        The widget (anything with ``_repr_mimebundle_``).
    static
        Returns the static HTML that replaces the widget (default: :func:`widget_text`).
    """

    def __init__(self, widget: Any, static: Callable[[], str] | None = None) -> None:
        self.widget = widget
        self._static = static or (lambda: widget_text(widget))
        self._handles: list[DisplayHandle] = []
        self.frozen = False

    def show(self) -> None:
        """Display the widget in the current cell's output, under a new display id."""
        bundle = self.widget._repr_mimebundle_()
        if self.frozen or not bundle:  # ended, or no frontend: show the static copy
            display({"text/html": self._static()}, raw=True)
            return
        handle = display(bundle, raw=True, display_id=True)
        if handle is not None:
            self._handles.append(handle)

    def _ipython_display_(self) -> None:
        self.show()

    def freeze(self) -> str:
        """Replace every output showing the widget with its static copy. Idempotent.

        Returns
        -------
        str
            The static HTML.
        """
        static = f"<div class='quoteflow-frozen'>{self._static()}</div>"
        text = f"<static copy of {type(self.widget).__name__}>"
        for handle in self._handles:
            handle.update({"text/html": static, "text/plain": text}, raw=True)
        self._handles.clear()
        self.frozen = True
        return static


def live_display(widget: Any, static: Callable[[], str] | None = None) -> LiveDisplay:
    """Wrap ``widget`` so that it can be frozen into static HTML (show it as a cell's value).

    Parameters
    ----------
    widget
        Any ipywidget.
    static
        Returns the HTML that replaces it on :meth:`LiveDisplay.freeze` (default: the
        descriptions and values of its controls and the text of its HTML parts).

    Returns
    -------
    LiveDisplay
        Display it; call ``freeze()`` where the live part of the notebook ends.
    """
    return LiveDisplay(widget, static)


def widget_text(widget: Any) -> str:
    """Static HTML of a box of simple widgets: each control's description and value."""
    children = getattr(widget, "children", None)
    if children is not None:
        tag = "span" if "HBox" in type(widget).__name__ else "div"
        inner = " ".join(widget_text(c) for c in children)
        return f"<{tag}>{inner}</{tag}>"
    if type(widget).__name__ in ("HTML", "HTMLMath"):
        return str(widget.value)  # already HTML
    description = html.escape(str(getattr(widget, "description", "") or ""))
    value = getattr(widget, "value", None)
    if isinstance(value, float):
        shown = f"{value:.4g}"
    else:
        shown = html.escape("" if value is None else str(value))
    return f"<span>{description} <b>{shown}</b></span>"
