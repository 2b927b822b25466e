"""Transports benchmark: SSE vs WebSocket vs polling (``quoteflow bench transports``)."""
