"""Bokeh inside JupyterLab: inline BokehJS and an echo-free ``jupyter_bokeh`` widget.

Two problems of ``jupyter_bokeh.BokehModel`` (4.x) that a live chart runs into, and what
this module does about them:

1. **BokehJS must be in the page** before a ``BokehModel`` view renders. The default
   resources point at a CDN, which is unreachable offline and on locked-down hubs, and
   the view then fails with "Cannot read properties of undefined (reading 'require')".
   :func:`load_bokehjs` publishes BokehJS *inline* once per kernel.

2. **Streamed points come back as echoes.** When the kernel calls
   ``ColumnDataSource.stream()``, every browser view applies the patch and then reports
   the resulting change back to the kernel as a ``ColumnsStreamed`` event; the stock
   widget applies that report again, so each point is stored twice on the kernel side
   (and once more per extra view). :class:`EchoFreeBokehModel` drops incoming
   ``ColumnsStreamed`` / ``ColumnsPatched`` events: our charts have no tools that edit
   data in the browser, so every such event is an echo.

It also answers the late-view problem: a view renders from the ``render_bundle`` trait,
which ``BokehModel`` computes once, at creation. A view opened later (page reload, a
second ``display()``) would start from that old state and miss everything streamed
since. :meth:`EchoFreeBokehModel.get_state` serialises the *current* document whenever
the frontend asks for the full state (JupyterLab does on reload), and
:meth:`EchoFreeBokehModel.resync` pushes the current document to every view (called when
the widget is displayed again). A view the frontend creates on its own without asking the
kernel (JupyterLab's "Create New View for Cell Output") still starts from the last bundle
sent; call ``resync()`` to catch it up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from bokeh.core.json_encoder import serialize_json
from bokeh.models import LayoutDOM
from jupyter_bokeh import BokehModel

__all__ = ["ECHO_EVENT_KINDS", "EchoFreeBokehModel", "load_bokehjs"]

#: Document events from the browser that, in our read-only charts, are always echoes of
#: changes the kernel made itself.
ECHO_EVENT_KINDS = frozenset({"ColumnsStreamed", "ColumnsPatched"})

#: Frontend sessions (browser pages, nbclient runs) that got BokehJS from this kernel.
_loaded_sessions: set[str] = set()


def _frontend_session(shell: Any) -> str:
    """Session id of the frontend whose request is running (new for every page load)."""
    kernel = getattr(shell, "kernel", None)
    parent: Any = {}
    if kernel is not None and hasattr(kernel, "get_parent"):
        with contextlib.suppress(Exception):
            parent = kernel.get_parent()
    if not parent:
        parent = getattr(shell, "parent_header", None) or {}
    return str(parent.get("header", {}).get("session", ""))


def load_bokehjs(force: bool = False) -> bool:
    """Publish BokehJS inline (no CDN) into the notebook, once per frontend page.

    "Once per page", not once per kernel: a reloaded page (or a second browser) talks to
    the same kernel with a new session id and has no BokehJS yet, so it gets it again;
    the same page never gets it twice (the bundle is a few MB, which is also why notebooks
    are stored with outputs stripped).

    Parameters
    ----------
    force
        Publish even if this page already got it (e.g. after clearing every output and
        reloading from a saved file).

    Returns
    -------
    bool
        True if BokehJS was published now. Outside IPython nothing is published.
    """
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    if shell is None:
        return False
    session = _frontend_session(shell)
    if session in _loaded_sessions and not force:
        return False
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(resources=INLINE, hide_banner=True)
    _loaded_sessions.add(session)
    return True


class EchoFreeBokehModel(BokehModel):  # type: ignore[misc]
    """A ``jupyter_bokeh.BokehModel`` that ignores the browser's echoes of streamed data.

    Parameters
    ----------
    model
        The Bokeh layout (figure, column, ...) to show.
    **kwargs
        Passed to :class:`ipywidgets.DOMWidget`.

    Attributes
    ----------
    echoes_dropped
        Number of incoming ``ColumnsStreamed``/``ColumnsPatched`` events ignored (tests
        and the curious can check that echoes do arrive and are dropped).
    """

    def __init__(self, model: LayoutDOM, **kwargs: Any) -> None:
        # Every view needs BokehJS in the page first; publishing it here (once per kernel)
        # puts it in the output ahead of the first widget whatever the notebook does.
        load_bokehjs()
        self.echoes_dropped = 0
        super().__init__(model, **kwargs)

    def _sync_model(self, _model: Any, content: dict[str, Any], _buffers: list[Any]) -> None:
        # Decide on the raw message: deserialising a streamed batch only to throw it away
        # would cost as much as the duplicate we are avoiding.
        if content.get("event", "") == "jsevent" and content.get("kind") in ECHO_EVENT_KINDS:
            self.echoes_dropped += 1
            return
        super()._sync_model(_model, content, _buffers)

    def _current_bundle(self) -> Any:
        """The render bundle of the document as it is now, serialised like the trait."""
        return serialize_json(self._model_to_traits(self._model))

    def get_state(
        self, key: str | Iterable[str] | None = None, drop_defaults: bool = False
    ) -> dict[str, Any]:
        """Widget state for the frontend, with ``render_bundle`` reflecting the current data.

        The frontend asks for the full state when a page is (re)loaded; answering with the
        document as it is now lets that view start from the present instead of from the
        moment the widget was created.
        """
        state: dict[str, Any] = super().get_state(key=key, drop_defaults=drop_defaults)
        if "render_bundle" in state:
            state["render_bundle"] = self._current_bundle()
        return state

    def close(self) -> None:
        """Close the widget and detach it from its document. Idempotent."""
        if getattr(self, "_qf_closed", False):
            return
        self._qf_closed = True
        super().close()

    def resync(self) -> None:
        """Re-render every view from the current document (catches up late views)."""
        self.render_bundle = self._model_to_traits(self._model)
