"""Operator services over messages (jobs): trace one, search many, act on many.

``engine messages ...`` (engine/commands/messages.py) and ``/v1/messages`` (engine/admin/routes/
messages.py) are thin callers of these functions: :mod:`.tracing` (timeline, search, content),
:mod:`.actions` (cancel, hold, release, retry now; audited and evented), :mod:`.text` (the
human-readable timeline, sans-IO).
"""
