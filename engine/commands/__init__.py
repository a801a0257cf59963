"""Command groups of the ``engine`` CLI; each module exposes ``register(sub, common)``."""
