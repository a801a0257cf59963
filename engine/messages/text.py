"""The human-readable form of a timeline (``engine messages show`` without ``--json``), sans-IO.

Like Postfix's ``postcat`` or Postal's message page: what the job is, where it stands and why,
then one line per event (time, kind, node, attempt, code, DKIM selector, relay time), with
the reply text of deferrals and failures on its own line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from engine.messages.tracing import Timeline
from engine.smtp.codes import parse_enhanced_status
from engine.store.messages import MessageView, TimelineEvent

_HELD_SENTINEL_YEAR = 9999  # a held job's next_attempt_at (engine.store.jobs.HELD_UNTIL)


def _at(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _status(job: MessageView, now: dt.datetime) -> str:
    if job.held_at is not None and job.state in ("queued", "deferred", "sending"):
        return f"{job.state}, HELD since {_at(job.held_at)} (engine messages release {job.id})"
    if job.cancel_requested_at is not None and job.state == "sending":
        return "sending, cancel requested (ends cancelled unless the relay accepts it)"
    if job.state in ("queued", "deferred"):
        due = job.next_attempt_at
        if due.year >= _HELD_SENTINEL_YEAR:
            return job.state
        wait = (due - now).total_seconds()
        when = "due now" if wait <= 0 else f"next attempt in {wait:.0f}s at {_at(due)}"
        return f"{job.state}, {when}"
    return job.state


def _header(job: MessageView, now: dt.datetime) -> Iterable[str]:
    yield f"message {job.id}  tenant {job.tenant_id}  key {job.idempotency_key}"
    yield f"  state      {_status(job, now)}"
    yield f"  from       {job.sender}"
    yield f"  to         {job.recipient}"
    if job.campaign_id:
        yield f"  campaign   {job.campaign_id}"
    yield f"  priority   {job.priority}   attempts {job.attempts}"
    if job.message_id:
        yield f"  message-id {job.message_id}"
    yield f"  created    {_at(job.created_at)}"
    if job.send_at:
        yield f"  send at    {_at(job.send_at)}"
    if job.expires_at and job.finished_at is None:
        yield f"  expires    {_at(job.expires_at)}"
    if job.finished_at:
        yield f"  finished   {_at(job.finished_at)}"
    if job.relay_node:
        yield f"  last node  {job.relay_node}"
    if job.last_code is not None or job.last_reply:
        # The status is usually parsed from the head of the reply text: shown if the text lacks it.
        status = job.last_status
        if status and job.last_reply and parse_enhanced_status(job.last_reply) == status:
            status = None
        code = " ".join(str(x) for x in (job.last_code, status) if x)
        yield f"  last reply {code} {job.last_reply or ''}".rstrip()


def _event_line(ev: TimelineEvent) -> Iterable[str]:
    data = dict(ev.data or {})
    status = data.get("status")
    parts = [_at(ev.at), f"{ev.kind:<13}"]
    for key, label in (
        ("attempt", "attempt"),
        ("node", "node"),
        ("code", "code"),
        ("status", "status"),
        ("selector", "dkim"),
        ("relay_ms", "relay_ms"),
        ("by", "by"),
    ):
        value = data.pop(key, None)
        if value is not None:
            parts.append(f"{label}={value}")
    if ev.reason and ev.reason != status:
        parts.append(f"reason={ev.reason}")
    data.pop("sender", None)
    for key in sorted(data):  # kinds and fields added later are shown, not dropped
        parts.append(f"{key}={data[key]}")
    yield ("  " + "  ".join(parts)).rstrip()
    if ev.reply:
        yield f"      reply: {ev.reply}"


def render_text(tl: Timeline, now: dt.datetime | None = None) -> str:
    """The timeline for a terminal (ends with a newline)."""
    lines = list(_header(tl.job, now or dt.datetime.now(dt.UTC)))
    lines.append("")
    if not tl.events:
        lines.append("events: none recorded")
    else:
        lines.append(f"events ({len(tl.events)}, oldest first):")
        for ev in tl.events:
            lines.extend(_event_line(ev))
    return "\n".join(lines) + "\n"
