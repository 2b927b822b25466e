"""User-facing errors.

One small hierarchy: every error a user can cause derives from :class:`QuoteflowError`,
and its message says what was wrong and what to do. Input-validation errors also
derive from :class:`ValueError` so that ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "ParameterError", "QuoteflowError", "StreamError"]


class QuoteflowError(Exception):
    """Base class of every error quoteflow raises on purpose."""


class DataError(QuoteflowError, ValueError):
    """Price data that cannot be used (NaN, non-positive, too short, bad column...)."""


class ConfigError(QuoteflowError, ValueError):
    """A market/server configuration value that is missing or out of range."""


class ParameterError(ConfigError):
    """A model parameter out of its allowed range; :attr:`param` names it.

    Parameters
    ----------
    param : str
        The parameter's name (``"sigma"``), so that every door (HTTP, TOML, CLI) can say
        where the error is without parsing the message.
    message : str
        What is wrong and the allowed range.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class StreamError(QuoteflowError):
    """An SSE stream that cannot continue (HTTP 204/401/403/404, bad content type...)."""
