"""PostgreSQL tiers (queue, content, oltp, olap): pool, migrations and batched access.

Knows nothing of relay or inbound; callers pass plain values and get frozen structs back.
"""
