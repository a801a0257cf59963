"""The relay's SMTP client transaction, without sockets: a scripted node answers what it writes.

Every mode (one command per round trip, PIPELINING with DATA, PIPELINING with BDAT) is driven
against the same scripted replies and must end the same way; replies split at every byte, multi-
line replies, refusals at each step, per-recipient refusals, drops and timeouts at each stage,
and the envelope's ESMTP and DSN parameters.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import OutcomeKind
from engine.relay.dsn import DsnRequest
from engine.relay.envelope import build_envelope
from engine.relay.replies import classify_reply
from engine.relay.transaction import Ending, Mode, Outcome, Transaction
from engine.relay.wire import Payload, ReplyParser, prepare_payload

SENDER = "bounce+1@verp.example.test"
RCPTS = ["a@x.test", "b@x.test"]
BODY = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
PAYLOAD = prepare_payload(BODY)
ALL_EXT = frozenset({"pipelining", "chunking", "size", "8bitmime", "dsn", "smtputf8"})

_TEXT = {
    250: b"2.0.0 Ok",
    251: b"2.1.5 will forward",
    354: b"End data with <CR><LF>.<CR><LF>",
    421: b"4.7.0 closing, too many connections",
    450: b"4.2.1 mailbox busy, try again later",
    451: b"4.3.0 local error",
    452: b"4.5.3 too many recipients",
    503: b"5.5.1 bad sequence",
    550: b"5.1.1 no such user",
    552: b"5.2.2 mailbox full",
    554: b"5.7.1 rejected",
}


def reply(code: int, lines: int = 1) -> bytes:
    """A reply of ``lines`` lines (``NNN-`` continuation lines, then ``NNN ``)."""
    text = _TEXT.get(code, b"text")
    head = b"".join(b"%d-%s part %d\r\n" % (code, text, i) for i in range(lines - 1))
    return head + b"%d %s\r\n" % (code, text)


class ScriptedNode:
    """Reads what the client writes and answers from a script, like a server would.

    After MAIL is refused the RCPTs get 503; with no recipient accepted, DATA/BDAT get 554; a
    354 it gives anyway (``go_ahead_anyway``) is ended by a lone dot, which gets 554. After a 421
    the node answers nothing.
    ``drop_after``: stop answering (the connection drops) after that many replies.
    """

    def __init__(
        self,
        *,
        mail: int = 250,
        rcpts: Sequence[int] = (250, 250),
        data: int = 354,
        final: int = 250,
        rset: int = 250,
        lines: int = 1,
        drop_after: int | None = None,
        go_ahead_anyway: bool = False,
    ) -> None:
        self.mail = mail
        self.rcpts = list(rcpts)
        self.data = data
        self.final = final
        self.rset = rset
        self.go_ahead_anyway = go_ahead_anyway  # 354 to DATA even with no recipient accepted
        self.lines = lines
        self.drop_after = drop_after
        self.commands: list[bytes] = []
        self.payloads: list[bytes] = []
        self._buf = b""
        self._state = "command"
        self._chunk = 0
        self._mail_ok = False
        self._accepted = 0
        self._rcpt = 0
        self._answered = 0
        self.closed = False

    def _say(self, code: int) -> bytes:
        if self.closed or (self.drop_after is not None and self._answered >= self.drop_after):
            self.closed = True
            return b""
        self._answered += 1
        if code == 421:
            out = reply(code, self.lines)
            self.closed = True
            return out
        return reply(code, self.lines)

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = b""
        while True:
            if self._state == "data":
                end = self._buf.find(b"\r\n.\r\n")
                if end == -1 and self._buf.startswith(b".\r\n"):
                    end = 0
                elif end == -1:
                    return out
                else:
                    end += 2
                skip = 3
                self.payloads.append(self._buf[:end])
                self._buf = self._buf[end + skip :]
                self._state = "command"
                out += self._say(self._after_payload())
                continue
            if self._state == "bdat":
                if len(self._buf) < self._chunk:
                    return out
                self.payloads.append(self._buf[: self._chunk])
                self._buf = self._buf[self._chunk :]
                self._state = "command"
                out += self._say(self._after_payload())
                continue
            end = self._buf.find(b"\r\n")
            if end == -1:
                return out
            line, self._buf = self._buf[:end], self._buf[end + 2 :]
            self.commands.append(line)
            out += self._command(line)

    def _after_payload(self) -> int:
        if not (self._mail_ok and self._accepted):
            return 554
        return self.final

    def _command(self, line: bytes) -> bytes:
        verb = line.split(b":")[0].split(b" ")[0].upper()
        if verb == b"MAIL":
            code = self.mail
            self._mail_ok = code == 250
            return self._say(code)
        if verb == b"RCPT":
            code = self.rcpts[self._rcpt] if self._mail_ok else 503
            self._rcpt += 1
            self._accepted += code in (250, 251)
            return self._say(code)
        if verb == b"DATA":
            code = self.data
            if not (self._mail_ok and self._accepted):
                code = 354 if self.go_ahead_anyway else 554
            if code == 354:
                self._state = "data"
            return self._say(code)
        if verb == b"BDAT":
            self._chunk = int(line.split()[1])
            self._state = "bdat"
            return b""
        if verb == b"RSET":
            return self._say(self.rset)
        raise AssertionError(f"unexpected command {line!r}")


Feeder = Callable[[Transaction, bytes], bytes]


def feed_whole(tx: Transaction, data: bytes) -> bytes:
    return tx.receive(data)


def feed_bytewise(tx: Transaction, data: bytes) -> bytes:
    return b"".join(tx.receive(data[i : i + 1]) for i in range(len(data)))


def run(
    node: ScriptedNode,
    mode: Mode,
    *,
    rcpts: Sequence[str] = RCPTS,
    payload: Payload = PAYLOAD,
    feed: Feeder = feed_whole,
    on_silence: Callable[[Transaction], None] | None = None,
) -> Outcome:
    """Run a transaction against ``node`` until it ends; silence means the connection dropped."""
    envelope = build_envelope(SENDER, list(rcpts), payload, ALL_EXT)
    tx = Transaction(envelope, payload, mode, ReplyParser())
    out = tx.start()
    while tx.outcome is None:
        answer = node.feed(out)
        if not answer:
            (on_silence or (lambda t: t.connection_lost("connection closed by the node")))(tx)
            break
        out = feed(tx, answer)
    assert tx.outcome is not None
    return tx.outcome


MODES = list(Mode)


# -- the happy path ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_accepted_message_is_relayed_once(mode: Mode, feed: Feeder) -> None:
    node = ScriptedNode(lines=3)
    outcome = run(node, mode, feed=feed)
    assert outcome.ending is Ending.ANSWERED
    assert outcome.verdict.kind is OutcomeKind.RELAYED
    assert outcome.verdict.text.endswith("2.0.0 Ok")
    assert outcome.reusable and outcome.refused == ()
    # The node got the message exactly once, as sent (DATA un-stuffs what BDAT never stuffs).
    got = node.payloads[0]
    if mode is not Mode.CHUNKED:
        got = got.replace(b"\r\n..", b"\r\n.").removeprefix(b".")
    assert node.payloads == [node.payloads[0]] and got == PAYLOAD.body
    assert not any(c == b"RSET" for c in node.commands)


def test_modes_write_what_rfc_2920_and_3030_say() -> None:
    envelope = build_envelope(SENDER, RCPTS, PAYLOAD, ALL_EXT)
    stepwise = Transaction(envelope, PAYLOAD, Mode.STEPWISE).start()
    assert stepwise.startswith(b"MAIL FROM:<bounce+1@verp.example.test>")
    assert stepwise.count(b"\r\n") == 1  # one command, then wait
    pipelined = Transaction(envelope, PAYLOAD, Mode.PIPELINED).start()
    assert pipelined.count(b"RCPT TO:") == 2 and pipelined.endswith(b"DATA\r\n")
    chunked = Transaction(envelope, PAYLOAD, Mode.CHUNKED).start()
    assert b"BDAT %d LAST\r\n" % PAYLOAD.size + PAYLOAD.body in chunked
    assert chunked.endswith(PAYLOAD.body) and b"DATA" not in chunked


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=10), st.sampled_from(MODES))
def test_replies_split_anywhere(cuts: list[int], mode: Mode) -> None:
    def feed_cut(tx: Transaction, data: bytes) -> bytes:
        bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
        return b"".join(tx.receive(data[a:b]) for a, b in itertools.pairwise(bounds))

    outcome = run(ScriptedNode(rcpts=(250, 550), lines=2), mode, feed=feed_cut)
    assert outcome.verdict.kind is OutcomeKind.RELAYED
    assert [r.recipient for r in outcome.refused] == ["b@x.test"]


# -- refusals: every mode reaches the same verdict ------------------------------------------------

CODES_MAIL = st.sampled_from([250, 421, 451, 550, 553])
CODES_RCPT = st.sampled_from([250, 251, 421, 450, 452, 550, 552])
CODES_DATA = st.sampled_from([354, 421, 451, 554])
CODES_FINAL = st.sampled_from([250, 421, 451, 552, 554])


def reference(mail: int, rcpts: list[int], data: int, final: int) -> tuple[int, bool, bool]:
    """What RFC 5321 says the transaction ends with: the deciding reply code, whether the session
    is still usable, and whether the transaction was refused before the payload."""
    if mail != 250:
        return mail, mail != 421, True
    refused = [c for c in rcpts if c not in (250, 251)]
    if 421 in rcpts:
        cut = rcpts.index(421)
        refused = [c for c in rcpts[: cut + 1] if c not in (250, 251)]
        refused += [421] * (len(rcpts) - cut - 1)
        first = next((c for c in refused if 400 <= c < 500), refused[0])
        return first, False, True
    if len(refused) == len(rcpts):
        first = next((c for c in refused if 400 <= c < 500), refused[0])
        return first, True, True
    if data != 354:
        return data, data != 421, True
    return final, final != 421, False


@settings(max_examples=300)
@given(CODES_MAIL, st.lists(CODES_RCPT, min_size=1, max_size=4), CODES_DATA, CODES_FINAL)
def test_every_mode_gives_the_reference_verdict(
    mail: int, rcpts: list[int], data: int, final: int
) -> None:
    addresses = [f"r{i}@x.test" for i in range(len(rcpts))]
    code, reusable, refused_tx = reference(mail, rcpts, data, final)
    for mode in MODES:
        if (
            mode is Mode.CHUNKED
            and data != 354
            and mail == 250
            and any(c in (250, 251) for c in rcpts[: rcpts.index(421) if 421 in rcpts else None])
        ):
            continue  # no DATA command to refuse with BDAT; covered by the final reply instead
        node = ScriptedNode(mail=mail, rcpts=rcpts, data=data, final=final)
        outcome = run(node, mode, rcpts=addresses)
        assert outcome.ending is Ending.ANSWERED, (mode, outcome)
        assert outcome.verdict.reply_code == code, (mode, outcome)
        assert outcome.verdict.kind is classify_reply(code, "").kind
        assert outcome.reusable is reusable, (mode, outcome)
        # A refused transaction that leaves the session usable was reset (RFC 5321 §4.1.1.5).
        assert (b"RSET" in node.commands) is (refused_tx and reusable), (mode, node.commands)
        if mail == 250 and 421 not in rcpts and not refused_tx:
            refused = [c for c in rcpts if c not in (250, 251)]
            assert [r.reply_code for r in outcome.refused] == refused


def test_refused_recipient_is_reported_and_the_rest_relayed() -> None:
    for mode in MODES:
        outcome = run(ScriptedNode(rcpts=(550, 250)), mode)
        assert outcome.verdict.kind is OutcomeKind.RELAYED
        (refusal,) = outcome.refused
        assert (refusal.recipient, refusal.kind, refusal.reply_code) == (
            "a@x.test",
            OutcomeKind.FAILED,
            550,
        )
        assert refusal.enhanced_status == "5.1.1"


def test_421_at_rcpt_refuses_the_rest_and_closes() -> None:
    for mode in MODES:
        outcome = run(ScriptedNode(rcpts=(250, 421)), mode)
        assert outcome.verdict.kind is OutcomeKind.DEFERRED and outcome.verdict.throttled
        assert not outcome.reusable


def test_a_2xx_where_354_was_due_is_never_relayed() -> None:
    outcome = run(ScriptedNode(data=250), Mode.PIPELINED)
    assert outcome.verdict.kind is OutcomeKind.DEFERRED
    assert "unexpected reply to DATA" in outcome.verdict.text


def test_refused_pipelined_group_ends_a_354_with_a_lone_dot() -> None:
    # A node that says 354 although every recipient was refused (RFC 2920 §3.1).
    node = ScriptedNode(rcpts=(550, 550), go_ahead_anyway=True)
    outcome = run(node, Mode.PIPELINED)
    assert outcome.verdict.reply_code == 550 and outcome.reusable
    # The node got an empty message (refused for want of recipients), then RSET.
    assert node.payloads == [b""]
    assert node.commands[-2:] == [b"DATA", b"RSET"]


def test_failed_rset_makes_the_session_unusable_not_the_verdict() -> None:
    outcome = run(ScriptedNode(mail=550, rset=421), Mode.STEPWISE)
    assert outcome.verdict.reply_code == 550 and not outcome.reusable


# -- connection lost or silent at each stage ------------------------------------------------------


def _stages(mode: Mode) -> list[tuple[int, str, Ending]]:
    """(replies before the drop, stage named, ending) for two recipients."""
    if mode is Mode.CHUNKED:
        after = Ending.LOST_AFTER_PAYLOAD
        return [(0, "MAIL", after), (1, "RCPT", after), (2, "RCPT", after), (3, "BDAT", after)]
    before = Ending.LOST_BEFORE_PAYLOAD
    return [
        (0, "MAIL", before),
        (1, "RCPT", before),
        (2, "RCPT", before),
        (3, "DATA", before),
        (4, "end of DATA", Ending.LOST_AFTER_PAYLOAD),
    ]


@pytest.mark.parametrize(
    ("mode", "answered", "stage", "ending"),
    [(m, *s) for m in MODES for s in _stages(m)],
)
def test_drop_at_each_stage(mode: Mode, answered: int, stage: str, ending: Ending) -> None:
    node = ScriptedNode(drop_after=answered)
    outcome = run(node, mode)
    assert outcome.ending is ending
    assert outcome.reason == f"connection closed by the node at {stage}"
    assert outcome.verdict.kind is OutcomeKind.DEFERRED and outcome.verdict.reply_code is None
    assert not outcome.reusable and outcome.refused == ()
    # Only a drop before any reply may be an idle-closed session worth one retry.
    assert outcome.stale is (answered == 0 and ending is Ending.LOST_BEFORE_PAYLOAD)
    # The node has the message exactly when the ending says it may.
    assert bool(node.payloads) is (ending is Ending.LOST_AFTER_PAYLOAD)


@pytest.mark.parametrize(
    ("mode", "answered", "stage", "ending"),
    [(m, *s) for m in MODES for s in _stages(m)],
)
def test_timeout_at_each_stage(mode: Mode, answered: int, stage: str, ending: Ending) -> None:
    outcome = run(ScriptedNode(drop_after=answered), mode, on_silence=lambda tx: tx.timed_out(0.3))
    assert outcome.ending is ending
    assert outcome.reason == f"no reply to {stage} within 0.3 s"
    assert not outcome.stale


def test_refusal_followed_by_a_hang_up_is_still_a_refusal() -> None:
    for mode in MODES:
        outcome = run(ScriptedNode(mail=550, drop_after=1), mode)
        assert outcome.ending is Ending.ANSWERED
        assert outcome.verdict.reply_code == 550 and not outcome.reusable


def test_garbled_reply_breaks_the_stream() -> None:
    envelope = build_envelope(SENDER, RCPTS, PAYLOAD, ALL_EXT)
    for mode in MODES:
        tx = Transaction(envelope, PAYLOAD, mode)
        tx.start()
        tx.receive(b"250 ok\r\nhello there\r\n")
        assert tx.outcome is not None and not tx.outcome.reusable
        assert tx.outcome.reason.startswith("unusable reply to RCPT: malformed reply line")


def test_unexpected_reply_with_nothing_due_breaks_the_stream() -> None:
    envelope = build_envelope(SENDER, ["a@x.test"], PAYLOAD, ALL_EXT)
    tx = Transaction(envelope, PAYLOAD, Mode.STEPWISE)
    tx.receive(b"250 ok\r\n")  # before anything was written
    assert tx.outcome is not None and tx.outcome.ending is Ending.LOST_BEFORE_PAYLOAD


def test_closed_before_start_is_stale() -> None:
    envelope = build_envelope(SENDER, RCPTS, PAYLOAD, ALL_EXT)
    tx = Transaction(envelope, PAYLOAD, Mode.CHUNKED)
    tx.connection_lost("connection lost")
    assert tx.outcome is not None and tx.outcome.stale
    assert tx.outcome.ending is Ending.LOST_BEFORE_PAYLOAD
    assert tx.outcome.reason == "connection lost at MAIL"


# -- the envelope -------------------------------------------------------------------------------


def test_envelope_parameters_follow_the_nodes_ehlo() -> None:
    payload = prepare_payload("Subject: é\r\n\r\nx\r\n".encode())
    dsn = DsnRequest(envid="42-abc", success=True)
    env = build_envelope(SENDER, ["a@x.test"], payload, ALL_EXT, dsn)
    assert env.mail == (
        b"MAIL FROM:<bounce+1@verp.example.test> SIZE=%d BODY=8BITMIME RET=HDRS ENVID=42-abc\r\n"
        % payload.size
    )
    assert env.rcpt_lines == (
        b"RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;a@x.test\r\n",
    )
    bare = build_envelope(SENDER, ["a@x.test"], payload, frozenset(), dsn)
    assert bare.mail == b"MAIL FROM:<bounce+1@verp.example.test>\r\n"
    assert bare.rcpt_lines == (b"RCPT TO:<a@x.test>\r\n",)


def test_non_ascii_address_needs_smtputf8() -> None:
    env = build_envelope(SENDER, ["jos\u00e9@x.test"], PAYLOAD, frozenset({"dsn"}))
    assert env.settled is not None and env.settled.enhanced_status == "5.6.7"
    tx = Transaction(env, PAYLOAD, Mode.PIPELINED)
    assert tx.start() == b"" and tx.outcome is not None
    assert tx.outcome.verdict.kind is OutcomeKind.FAILED
    utf8 = build_envelope(SENDER, ["jos\u00e9@x.test"], PAYLOAD, ALL_EXT, DsnRequest(envid="1"))
    assert b" SMTPUTF8" in utf8.mail and b"ORCPT" not in utf8.rcpt_lines[0]
    assert "jos\u00e9".encode() in utf8.rcpt_lines[0]


def test_unusable_addresses_are_refused_before_anything_is_written() -> None:
    env = build_envelope(SENDER, ["a@x.test", "b c@x.test"], PAYLOAD, ALL_EXT)
    assert env.recipients == ("a@x.test",)
    assert [r.enhanced_status for r in env.refused] == ["5.1.3"]
    outcome = run(ScriptedNode(rcpts=(250,)), Mode.PIPELINED, rcpts=["a@x.test", "b\x00@x.test"])
    assert outcome.verdict.kind is OutcomeKind.RELAYED
    assert [r.recipient for r in outcome.refused] == ["b\x00@x.test"]
    none_left = build_envelope(SENDER, ["b c@x.test"], PAYLOAD, ALL_EXT)
    tx = Transaction(none_left, PAYLOAD, Mode.STEPWISE)
    assert tx.start() == b"" and tx.outcome is not None
    assert tx.outcome.verdict.kind is OutcomeKind.FAILED
    sender = build_envelope("a b@x.test", RCPTS, PAYLOAD, ALL_EXT)
    assert sender.settled is not None and sender.settled.enhanced_status == "5.1.7"


def test_data_mode_dot_stuffs_and_bdat_does_not() -> None:
    for mode, stuffed in ((Mode.PIPELINED, True), (Mode.CHUNKED, False)):
        node = ScriptedNode()
        run(node, mode)
        assert (b"\r\n..leading" in node.payloads[0]) is stuffed
        assert re.search(rb"\r\n\.leading", node.payloads[0]) is not None or stuffed
