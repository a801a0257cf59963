"""``engine.inbound.mime.parse`` must build the tree the stdlib feed parser (compat32) builds.

The bounce reader trusts that everything downstream of the MIME parse (``get_payload``,
``get_param``, transfer decoding) sees the same objects either way, so this is a differential
test: every fixture, and mutations of them, through both parsers, compared node by node. Where
the port gives up (returns None) the stdlib runs instead, so only the trees it does build count.
"""

from __future__ import annotations

import email
import email.message
import email.policy
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.inbound import mime
from engine.inbound.rawcuts import make_opaque

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "bounces").glob("*.msg"))
TEXTS = [make_opaque(p.read_bytes()).decode("ascii", "surrogateescape") for p in FIXTURES]


def tree(msg: email.message.Message) -> object:
    """What the bounce reader can see of a part: fields, default type, payload, children."""
    payload = msg._payload  # the raw payload, as set by either parser
    if isinstance(payload, list):
        body: object = [tree(child) for child in payload]
    else:
        body = payload
    return (list(msg.items()), msg.get_default_type(), msg.get_unixfrom(), body)


def same_as_stdlib(text: str) -> bool:
    """Assert equal trees; False when the port left this input to the stdlib."""
    parsed = mime.parse(text)
    if parsed is None:
        return False
    expected = email.message_from_string(text, policy=email.policy.compat32)
    assert tree(parsed.msg) == tree(expected)
    if parsed.params is not None:
        assert mime.param(parsed.params, "report-type") == expected.get_param("report-type")
        assert mime.boundary(parsed.params) == expected.get_boundary()
    return True


def test_every_fixture_parses_to_the_stdlib_tree() -> None:
    built = sum(same_as_stdlib(text) for text in TEXTS)
    # The port must actually carry the corpus, not hand almost all of it back to the stdlib.
    assert built >= 0.9 * len(TEXTS), f"port built {built} of {len(TEXTS)} trees"


def test_line_endings_and_odd_delimiters() -> None:
    cases = [
        "Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\n\r\none\r\n--b\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--b--\r\nepilogue\r\n",
        'Content-Type: multipart/mixed; boundary="a b"\n\n--a b  \nX: 1\n\nx\n--a b--',
        "Content-Type: multipart/mixed; boundary=b\n\nno delimiter at all\n",
        "Content-Type: multipart/mixed\n\nno boundary parameter\n",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=o\n\n--o\n"
        "Content-Type: multipart/alternative; boundary=i\n\n--i\n\ninner\n--i--\n--o\n"
        "Content-Type: message/rfc822\n\nSubject: s\n\nbody\n--o--\n",
        "Content-Type: text/plain\r\rbody with bare CR\rlines\r",
        "X: folded\n value\n\tagain\n : no name\nY: 2\nbody without a separator line\n",
        "Content-Type: message/rfc822\n\nContent-Type: multipart/mixed; boundary=z\n\n--z\n\nq\n",
        "",
        "\n",
    ]
    for text in cases:
        assert same_as_stdlib(text), text


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.sampled_from(TEXTS),
    st.lists(
        st.tuples(
            st.sampled_from(["drop", "dup", "swap", "crlf", "cr", "boundary", "fold", "blank"]),
            st.integers(min_value=0),
        ),
        min_size=1,
        max_size=10,
    ),
)
def test_mutated_fixtures_parse_to_the_stdlib_tree(text: str, edits: list[tuple[str, int]]) -> None:
    lines = text.splitlines(keepends=True) or [""]
    delimiters = [line for line in lines if line.startswith("--")] or ["--x\n"]
    for op, n in edits:
        i = n % len(lines)
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = (n // 7) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "crlf":
            lines[i] = lines[i].rstrip("\r\n") + "\r\n"
        elif op == "cr":
            lines[i] = lines[i].rstrip("\r\n") + "\r"
        elif op == "boundary":  # a delimiter (or close delimiter) where none was
            end = "--\n" if n % 3 else "\n"
            lines.insert(i, delimiters[n % len(delimiters)].rstrip("\r\n") + end)
        elif op == "fold":
            lines.insert(i, " continued\n")
        elif op == "blank":
            lines.insert(i, "\n")
    same_as_stdlib("".join(lines))
