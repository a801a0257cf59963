"""Gmail / Yahoo bulk-sender rules that can be judged from a job alone, sans-IO.

Since February 2024 both require of bulk mail (here: a job with a ``campaign_id``) a working
one-click unsubscribe: ``List-Unsubscribe`` with an https URI plus ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` (RFC 8058). The engine adds both headers from the job's
``list_unsubscribe`` field (engine/compose/unsubscribe.py) when it holds an https URL; a raw
(pre-built) message must carry them itself. The other rules are enforced elsewhere: SPF, DKIM
and DMARC by the compliance check, a spam-complaint rate under 0.3% by shaping's auto-pause
(``[shaping] complaint_pause_rate = 0.003``).
"""

from __future__ import annotations

import email.parser
import email.policy

from engine.compose.unsubscribe import split_list_unsubscribe
from engine.errors import ComposeError
from engine.model import Content

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def _raw_violations(raw: bytes) -> list[str]:
    head = _HEADERS.parsebytes(raw)
    values = [v.strip() for v in head.get_all("List-Unsubscribe") or []]
    posts = [v.strip() for v in head.get_all("List-Unsubscribe-Post") or []]
    if not values:
        return ["bulk mail needs a List-Unsubscribe header (Gmail/Yahoo bulk-sender rules)"]
    if not any("<https://" in v.lower() for v in values):
        return ["List-Unsubscribe has no https URI, so one-click unsubscribe (RFC 8058) fails"]
    if "List-Unsubscribe=One-Click" not in posts:
        return ["bulk mail needs List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058)"]
    return []


def bulk_rule_violations(content: Content, *, campaign_id: str | None) -> list[str]:
    """Why this job breaks the bulk-sender rules (``[]``: it does not, or it is not bulk).

    Bulk = the job has a ``campaign_id``. Checked once per content at enqueue or compose time;
    the caller decides whether a violation refuses the job or is only counted.
    """
    if not campaign_id:
        return []
    if content.raw is not None:
        return _raw_violations(content.raw)
    if not content.list_unsubscribe:
        return [
            "bulk mail (campaign_id set) needs list_unsubscribe with an https URL for one-click "
            "unsubscribe (Gmail/Yahoo bulk-sender rules)"
        ]
    try:
        https_url, _ = split_list_unsubscribe(content.list_unsubscribe)
    except ComposeError as exc:
        return [exc.message]
    if https_url is None:
        return [
            "list_unsubscribe has only a mailto: URI; one-click unsubscribe (RFC 8058) needs an "
            "https URL"
        ]
    return []
