"""Interoperability: quoteflow's server against third-party SSE clients, and quoteflow's
client against third-party SSE servers, each through a proxy that cuts connections.

See docs/clients.md: its compatibility table is rendered from this suite's results
(``python -m tests.interop.table``) and a test checks it did not drift.
"""
