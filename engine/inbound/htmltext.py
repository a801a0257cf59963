"""Readable text out of an HTML notification part, in linear time whatever the markup.

A bounce that comes as HTML only is read as text: hidden elements (style, script, head)
dropped, line-breaking tags turned into new lines, other tags into spaces, entities decoded.
"""

from __future__ import annotations

import html
import re

from engine.inbound.textscan import same_length_lower

#: Characters of HTML markup converted to text, all parts together (real notices: a few KB to
#: tens of KB; the text read from the notification is cut shorter still).
MAX_HTML_CHARS = 128 * 1024


HTML_BREAKS = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d)[^>]*>", re.IGNORECASE)
HTML_TAGS = re.compile(r"<[^>]*>")
#: The opening of an element whose content is hidden: ``<(style|script|head)[^>]*>.*?</\1\s*>``
#: (IGNORECASE, DOTALL) is what :func:`_drop_hidden` removes, without that regex's quadratic
#: retries (each unclosed ``<style>`` searched to the end of the text: quadratic in its length).
_HIDDEN_OPEN = re.compile(r"<(style|script|head)", re.IGNORECASE)
_CLOSE_REST = re.compile(r"\s*>")


def html_to_text(markup: str) -> str:
    """The text of ``markup`` (see the module doc)."""
    text = drop_hidden(markup)
    text = sub_tags(HTML_BREAKS, "\n", text)
    return html.unescape(sub_tags(HTML_TAGS, " ", text))


def sub_tags(pattern: re.Pattern[str], replacement: str, text: str) -> str:
    """``pattern.sub(replacement, text)`` for a pattern whose matches end at a ``>``.

    No match lies after the last ``>``; searching there anyway costs a scan to the end from
    every ``<`` (quadratic in a flood of ``<``).
    """
    end = text.rfind(">") + 1
    return pattern.sub(replacement, text[:end]) + text[end:]


def drop_hidden(markup: str) -> str:
    """``markup`` with each ``<style|script|head ...>...</same>`` element replaced by a space.

    The same matches, leftmost first, as the regex in the comment on :data:`_HIDDEN_OPEN`, in
    linear time: the first ``>`` after an opening and, per element name, the position after
    which no closing tag remains are remembered instead of being searched again.
    """
    lowered = same_length_lower(markup)
    pieces: list[str] = []
    done = position = 0
    tag_end = -1  # the first ">" at or after the current opening's name
    no_close_from: dict[str, int] = {}
    while (opening := _HIDDEN_OPEN.search(markup, position)) is not None:
        name = opening.group(1).lower()
        if tag_end < opening.end():
            tag_end = markup.find(">", opening.end())
            if tag_end < 0:
                break  # no ">" left: no later opening can complete either
        end = _close_end(lowered, name, tag_end + 1, no_close_from)
        if end < 0:
            position = opening.start() + 1
            continue
        pieces.append(markup[done : opening.start()])
        pieces.append(" ")
        done = position = end
    if not pieces:
        return markup
    pieces.append(markup[done:])
    return "".join(pieces)


def _close_end(lowered: str, name: str, start: int, no_close_from: dict[str, int]) -> int:
    """End of the first ``</name\\s*>`` at or after ``start``, or -1 (remembered per name)."""
    if start >= no_close_from.get(name, len(lowered) + 1):
        return -1
    closing = "</" + name
    at = lowered.find(closing, start)
    while at >= 0:
        rest = _CLOSE_REST.match(lowered, at + len(closing))
        if rest is not None:
            return rest.end()
        at = lowered.find(closing, at + len(closing))
    no_close_from[name] = start
    return -1
