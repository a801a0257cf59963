"""Sender addresses: pausing and resuming them (:mod:`engine.senders.service`)."""
