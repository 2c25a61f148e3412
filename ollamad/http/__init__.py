"""The HTTP bridge: Ollama's API (``/api/*``) and the OpenAI-compatible API (``/v1/*``).

Only :mod:`ollamad.http.address`, :mod:`ollamad.http.settings` and :mod:`ollamad.http.metrics`
may be imported without the bridge running: they avoid Hypercorn and Starlette, whose import
costs the daemon's start-up (and ``--http none`` must not pay it at all).
"""
