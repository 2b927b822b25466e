"""quoteflow: calibrate price models, stream them over Server-Sent Events, watch them live.

The public API is re-exported here lazily so that ``import quoteflow`` stays light
(numpy/scipy only); the server and notebook layers load on first use.
"""

from __future__ import annotations

from quoteflow.errors import ConfigError, DataError, ParameterError, QuoteflowError, StreamError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "ParameterError",
    "QuoteflowError",
    "StreamError",
    "__version__",
]
