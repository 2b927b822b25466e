"""Freezing live widgets into static HTML (quoteflow.notebook.frozen), outside a kernel.

The kernel side (display ids, ``update_display_data``) is exercised by
``test_execute.py`` (no widget view left after Run All) and the JupyterLab test (reopened
notebooks show no widget error).
"""

from __future__ import annotations

import ipywidgets as widgets

from quoteflow.notebook import CalibrationPanel, live_display


def test_live_display_freezes_a_box_of_controls_into_their_values() -> None:
    box = widgets.VBox(
        [
            widgets.HBox(
                [widgets.FloatSlider(value=0.9, description="AAPL σ"), widgets.HTML("<b>rv</b>")]
            )
        ]
    )
    shown = live_display(box)
    static = shown.freeze()
    assert "AAPL σ" in static and "<b>0.9</b>" in static and "<b>rv</b>" in static
    assert shown.frozen
    assert "quoteflow-frozen" in static


def test_calibration_panel_freezes_into_its_tables_and_figures() -> None:
    panel = CalibrationPanel(ticker="MSFT", model="gbm")
    assert panel.fit() is not None
    static = panel.freeze()
    assert "quoteflow-static" in static  # the diagnostics figures
    assert panel.table.value in static and "download fit" in static
