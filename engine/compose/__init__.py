"""Message composition (sans-IO): MIME bodies, per-recipient headers, VERP, list headers and
job validation. See docs/compose.md for what the engine adds to each message."""

from engine.compose import message_id, verp
from engine.compose.address import Address, parse_address
from engine.compose.headers import format_date
from engine.compose.mime import (
    ComposedBody,
    build_body,
    effective_message_id,
    render,
    render_head,
)
from engine.compose.unsubscribe import (
    feedback_id,
    list_unsubscribe_headers,
    split_list_unsubscribe,
)
from engine.compose.validate import validate_job

__all__ = [
    "Address",
    "ComposedBody",
    "build_body",
    "effective_message_id",
    "feedback_id",
    "format_date",
    "list_unsubscribe_headers",
    "message_id",
    "parse_address",
    "render",
    "render_head",
    "split_list_unsubscribe",
    "validate_job",
    "verp",
]
