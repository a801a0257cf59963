"""Shaping: everything that decides *when* a message may go (DESIGN §4, docs/shaping.md).

Sans-IO maths (``gcra``, ``aimd``, ``warmup``, ``reputation``, ``signals``) import
no asyncio or redis; ``limiter``, ``feedback`` and ``persistence`` keep the shared state in Redis
(Lua, one round trip per batch) and PostgreSQL; ``providers`` groups recipient domains by MX;
:class:`engine.shaping.shaper.Shaper` is the façade the daemon calls.
"""
