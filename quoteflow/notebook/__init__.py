"""quoteflow in JupyterLab: start a server from a cell, watch it live, calibrate and push.

- :func:`serve_in_background` starts a quote server on its own thread and returns a handle
  (``url``, ``port``, ``stop()``, dashboard link); re-running the cell replaces the server.
- :class:`LiveChart` is an ipywidget with a live Bokeh price/volume chart fed by an SSE
  client running on the kernel's event loop.
- :class:`CalibrationPanel` fits a model to a shipped ticker or an uploaded CSV, shows
  the parameters and diagnostics, and pushes the fitted model to the running stream.

Bokeh reaches JupyterLab through ``jupyter_bokeh``; BokehJS is loaded inline (no CDN).
See docs/notebook.md.
"""

from __future__ import annotations

from quoteflow.notebook._bokeh import EchoFreeBokehModel, load_bokehjs
from quoteflow.notebook.calibrate import (
    MODEL_CHOICES,
    CalibrationPanel,
    calibrate_widget,
    diagnostics,
    fit_model,
    push_model,
)
from quoteflow.notebook.chart import LiveChart, running_charts
from quoteflow.notebook.frozen import LiveDisplay, live_display
from quoteflow.notebook.monitor import StreamMonitor
from quoteflow.notebook.server import (
    BackgroundServer,
    running_servers,
    serve_in_background,
    stop_all,
)
from quoteflow.notebook.static import StaticFigure, static_figure

__all__ = [
    "MODEL_CHOICES",
    "BackgroundServer",
    "CalibrationPanel",
    "EchoFreeBokehModel",
    "LiveChart",
    "LiveDisplay",
    "StaticFigure",
    "StreamMonitor",
    "calibrate_widget",
    "diagnostics",
    "fit_model",
    "live_display",
    "load_bokehjs",
    "push_model",
    "running_charts",
    "running_servers",
    "serve_in_background",
    "static_figure",
    "stop_all",
]
