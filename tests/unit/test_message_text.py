"""The human-readable timeline (engine messages show) and the DKIM selector read-back."""

from __future__ import annotations

import datetime as dt

from engine.dkim.sign import dkim_selectors
from engine.messages.text import render_text
from engine.messages.tracing import Timeline
from engine.store.messages import MessageView, TimelineEvent

T0 = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)


def _job(**over: object) -> MessageView:
    base: dict[str, object] = dict(
        id=42, tenant_id="acme", idempotency_key="k", state="deferred", priority="normal",
        sender="news@acme.example", recipient="bob@example.com", attempts=2,
        campaign_id="spring", message_id="<pm.42@acme.example>", relay_node="n1",
        last_code=451, last_status="4.7.1", last_reply="4.7.1 greylisted", send_at=None,
        next_attempt_at=T0 + dt.timedelta(minutes=5), created_at=T0 - dt.timedelta(hours=1),
        updated_at=T0, finished_at=None, expires_at=T0 + dt.timedelta(days=3),
    )  # fmt: skip
    base.update(over)
    return MessageView(**base)  # type: ignore[arg-type]


def test_a_deferral_shows_when_and_why() -> None:
    events = [
        TimelineEvent(1, "queued", T0 - dt.timedelta(hours=1)),
        TimelineEvent(
            2,
            "deferred",
            T0,
            reason="4.7.1",
            reply="4.7.1 greylisted",
            data={
                "attempt": 2,
                "node": "n1",
                "code": 451,
                "status": "4.7.1",
                "selector": "s2026",
                "relay_ms": 84.2,
                "sender": "news@acme.example",
            },
        ),
        TimelineEvent(3, "delivered", T0, data={"remote_mta": "mx.example.com", "x": [1]}),
    ]
    text = render_text(Timeline(_job(), events), now=T0)
    assert "state      deferred, next attempt in 300s at 2026-12-07 10:05:00.000Z" in text
    assert "last reply 451 4.7.1 greylisted" in text  # the status the text holds, once
    line = next(x for x in text.splitlines() if " deferred " in x)
    assert "attempt=2  node=n1  code=451  status=4.7.1  dkim=s2026  relay_ms=84.2" in line
    assert "reason=" not in line and "sender" not in line  # no repetition
    assert "      reply: 4.7.1 greylisted" in text
    # A kind this module has never heard of is shown with every field it carries.
    assert "delivered      remote_mta=mx.example.com  x=[1]" in text
    assert text.endswith("\n")


def test_held_and_cancel_requested_say_what_to_do() -> None:
    held = _job(state="queued", held_at=T0, next_attempt_at=dt.datetime(9999, 1, 1, tzinfo=dt.UTC))
    assert "HELD since 2026-12-07 10:00:00.000Z (engine messages release 42)" in render_text(
        Timeline(held, []), now=T0
    )
    flying = _job(state="sending", cancel_requested_at=T0)
    assert "cancel requested" in render_text(Timeline(flying, []), now=T0)
    assert "events: none recorded" in render_text(Timeline(flying, []), now=T0)


def test_dkim_selectors_reads_only_the_leading_signatures() -> None:
    signed = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=acme.example;\r\n s=s2026; h=from:to;\r\n"
        b" b=AbC=\r\nDKIM-Signature: v=1; a=ed25519-sha256; s=ed1; d=acme.example; b=x\r\n"
        b"From: a@acme.example\r\nX-Note: s=forged\r\n\r\nbody s=no\r\n"
    )
    assert dkim_selectors(signed) == "s2026,ed1"
    assert dkim_selectors(b"From: a\r\nDKIM-Signature: s=late\r\n\r\n") is None
    assert dkim_selectors(b"DKIM-Signature: v=1; d=x; b=y\n\nbody") is None  # no s= tag
    assert dkim_selectors(b"") is None


def test_last_reply_keeps_a_status_its_text_lacks() -> None:
    text = render_text(Timeline(_job(last_reply="greylisted, try later"), []), now=T0)
    assert "last reply 451 4.7.1 greylisted, try later" in text
