"""The linear-time rewrites of issue 15 give the answers of the code they replaced.

Each former implementation (a regex or loop that was quadratic on hostile input) is kept here
as the oracle and compared with the new one on generated inputs built from the fragments that
matter to it. Where the rewrite deliberately differs, the test states the difference.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.inbound import htmltext, message, nonstandard, textscan

EXAMPLES = settings(max_examples=400, deadline=None)


def _joined(fragments: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(fragments), max_size=40).map("".join)


# -- HTML ---------------------------------------------------------------------------------------

_OLD_HIDDEN = re.compile(r"<(style|script|head)[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML = _joined(
    [
        "<style",
        "<STYLE",
        "<script",
        "<Head",
        "<header",
        "</style",
        "</sTyle",
        "</script",
        "</head",
        "</header",
        ">",
        " ",
        "\n",
        "\t",
        "x",
        "<",
        "</style >",
        "</STYLE\t>",
        "<br",
        "< /p",
        "<b>",
        "İ",
    ]
)


@EXAMPLES
@given(_HTML)
def test_drop_hidden_matches_the_old_regex(markup: str) -> None:
    assert htmltext.drop_hidden(markup) == _OLD_HIDDEN.sub(" ", markup)


@EXAMPLES
@given(_HTML)
def test_tag_substitutions_match_the_plain_regex(markup: str) -> None:
    for pattern in (htmltext.HTML_TAGS, htmltext.HTML_BREAKS):
        assert htmltext.sub_tags(pattern, "#", markup) == pattern.sub("#", markup)


# -- addresses ----------------------------------------------------------------------------------

_OLD_BARE = re.compile(
    r"([A-Za-z0-9._%+=&'/!#$*?^`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
)
_ADDRESSY = _joined(["a", "b.", "-", "_", "@", "@x", ".com", " ", "<", ">", ",", "'", "İ", "é"])


@EXAMPLES
@given(_ADDRESSY)
def test_first_address_search_is_unchanged(text: str) -> None:
    """The look-behind only skips starts inside a run: the leftmost match is the same."""
    old = _OLD_BARE.search(text)
    new = textscan._BARE_ADDRESS.search(text)
    assert (old.group(1) if old else None) == (new.group(1) if new else None)
    old_any = re.compile(nonstandard._ADDRESS).search(text)
    new_any = nonstandard._ANY_ADDRESS.search(text)
    assert (old_any.group(0) if old_any else None) == (new_any.group(0) if new_any else None)


_INTRO_TEXT = _joined(["to ", "for: ", "a", "-", "user", "@", "x.org", " ", "<", "mailto:", "'"])
_OLD_INLINE = re.compile(
    nonstandard._INLINE_RECIPIENT.pattern.replace(
        nonstandard._BOUNDED_ADDRESS, nonstandard._ADDRESS
    ),
    re.IGNORECASE,
)


@EXAMPLES
@given(_INTRO_TEXT)
def test_inline_recipients_unchanged_for_rfc_local_parts(text: str) -> None:
    """Only local parts over 64 characters (RFC 5321's limit) are read differently."""
    old = [m.group(1) for m in _OLD_INLINE.finditer(text)]
    new = [m.group(1) for m in nonstandard._INLINE_RECIPIENT.finditer(text)]
    if all(len(a.split("@")[0]) <= 64 for a in old):
        assert new == old


# -- header text --------------------------------------------------------------------------------


def _old_read_fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last: str | None = None
    for line in block.split("\n"):
        if line[:1] in (" ", "\t"):
            if last is not None:
                fields[last] = f"{fields[last]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip()
        if not colon or not name or " " in name or "\t" in name:
            last = None
            continue
        key = name.lower()
        if key in fields:
            last = None
            continue
        fields[key] = value.strip()
        last = key
    return fields


_FIELDS = _joined(["To: a", "to:", "X-A : b", "\n", " cont", "\tx", ": v", "Subject:", "İ", " "])


@EXAMPLES
@given(_FIELDS)
def test_read_fields_unchanged_below_the_caps(block: str) -> None:
    assert message.read_fields(block) == _old_read_fields(block)


def _old_quoted_field(text: str, lowered: str, name: str, *, indented: bool) -> str | None:
    key = name.lower() + ":"
    position = lowered.find(key)
    while position >= 0:
        line_start = lowered.rfind("\n", 0, position) + 1
        if line_start == position or (indented and not text[line_start:position].strip()):
            end = text.find("\n", position)
            value = text[position + len(key) : end if end >= 0 else len(text)].strip()
            if value:
                return value
        position = lowered.find(key, position + len(key))
    return None


_PASTED = _joined(["To:", "to: ", "Message-ID:", " ", "\t", "\n", "x", "<a@b>", "İ", "\x1c"])


@EXAMPLES
@given(_PASTED, st.sampled_from(["To", "Message-ID"]), st.booleans())
def test_quoted_field_unchanged(text: str, name: str, indented: bool) -> None:
    lowered = textscan.same_length_lower(text)
    expected = _old_quoted_field(text, lowered, name, indented=indented)
    assert textscan.quoted_field(text, lowered, name, indented=indented) == expected


@EXAMPLES
@given(st.text(alphabet="aAİıI\u0307 \U000f0000", max_size=30))
def test_same_length_lower_unchanged(text: str) -> None:
    expected = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    assert textscan.same_length_lower(text) == expected


# -- notification text --------------------------------------------------------------------------

_NOTICE = _joined(
    ["line", "\n", "  ", "\n\n", " \t", "--- original message", "------", "received: x", "a"]
)


@EXAMPLES
@given(_NOTICE)
def test_notification_cut_moves_only_over_blank_lines(text: str) -> None:
    """Blank lines just above the marker may now stay in the notification; nothing else moves."""
    old_markers = re.compile(
        nonstandard._ORIGINAL_MARKERS.pattern.replace(r"[^\S\n]*", r"\s*"),
        re.MULTILINE | re.VERBOSE,
    )
    lines = text.splitlines()[: nonstandard.MAX_LINES]
    head = "\n".join(lines)
    start = len(lines[0]) + 1 if lines else 0
    if len(lines) > 1:
        start += len(lines[1]) + 1
    found = old_markers.search(head.lower(), start)
    old = head[: found.start()].rstrip("\n") if found else head
    new = nonstandard.notification_body(text)
    assert new.startswith(old)
    assert not new[len(old) :].strip()
