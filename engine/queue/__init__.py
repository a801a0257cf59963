"""Redis streams, the fast path of the hybrid queue (PostgreSQL stays the truth)."""
