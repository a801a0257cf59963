"""A faster stand-in for ``email.feedparser`` (compat32) on the MIME shapes bounces have.

The stdlib feed parser reads its input line by line through a generator, a deque and a stack of
end-of-part predicates, and asks each new part its content type four or five times: on our
corpus that was a quarter of the whole bounce parse. :func:`parse` runs the same algorithm
(``FeedParser._parsegen`` of CPython 3.11, branch for branch) over a list of lines and builds
the same ``email.message.Message`` tree (header fields, payloads, children), so everything
downstream (``get_payload``, ``get_param``, transfer decoding) is the stdlib's own code on
equal objects. What the tree does not get: ``defects``, ``preamble`` and ``epilogue``, which
the bounce reader never looks at; and field values are cut at :data:`MAX_FIELD_CHARS`.

It gives up (returns None, and the caller runs the stdlib parser) on what bounces rarely have
and what would need more of the stdlib's special cases: a ``message/delivery-status`` part
(load() renames the ones it reads to opaque text first, so only odd spellings get here), a
child of ``multipart/digest`` (its default type is message/rfc822), Unix ``From `` lines among
the header fields, and parts nested more than :data:`_MAX_DEPTH` deep.
"""

from __future__ import annotations

import email.message
import email.utils
import io
import itertools
import operator
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

Message = email.message.Message

#: The value of a Content-Type parameter; an RFC 2231 one is (charset, language, text).
ParamValue = str | tuple[str | None, str | None, str]
#: ``Message.get_params(unquote=False)``: the (name, value) pairs of the Content-Type field.
Params = Sequence[tuple[str, ParamValue]]

# The stdlib's own patterns (email.feedparser), so lines are classified the same way.
_HEADER_LINE = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")
_NEWLINE = re.compile(r"\r\n|\r|\n")
#: What may follow a delimiter's blanks: the feed parser's ``(?P<linesep>\r\n|\r|\n)?$``
#: for a line as the reader cuts them (one line end, at the end).
_DELIMITER_ENDS = frozenset({"", "\r\n", "\r", "\n"})
_DIGEST = "multipart/digest"
_DELIVERY_STATUS = "message/delivery-status"
_UNIX_FROM = "From "
#: Parts nested deeper than this are left to the stdlib: this port takes up to two stack frames
#: per level where the stdlib's generators take one, and must not hit the recursion limit where
#: the stdlib does not (real reports nest two or three levels).
_MAX_DEPTH = 32

#: Characters kept of a field value. Real fields are far shorter; longer ones only feed
#: quadratic stdlib code (``get_param`` re-slices the value once per parameter: a 1 MB folded
#: Content-Type would take seconds). The stdlib keeps whole values; here they are cut.
MAX_FIELD_CHARS = 16 * 1024

_STARTS_WITH_DASHES = operator.methodcaller("startswith", "--")

#: A delimiter test: None for a line that is no delimiter of the part, else whether it is the
#: close delimiter (``--boundary--``).
_Matcher = Callable[[str], "bool | None"]


class _GiveUp(Exception):
    """The input needs a stdlib branch this port does not have."""


class Parsed(NamedTuple):
    """The message tree, and the Content-Type parameters of a multipart top-level part."""

    msg: Message
    #: Read once for the boundary (None when the top-level part is no multipart).
    params: Params | None


def parse(text: str) -> Parsed | None:
    """The compat32 Message tree ``email.message_from_string(text)`` would build, or None when
    the input needs a branch this port leaves to the stdlib (see the module doc)."""
    # StringIO(newline="") splits on \r\n, \r and \n keeping the ends: exactly the lines
    # BufferedSubFile hands to the feed parser (str.splitlines also splits on \f, \x1c ...).
    reader = _Reader(io.StringIO(text, newline="").readlines())
    try:
        msg = reader.part(None)
    except _GiveUp:
        return None
    return Parsed(msg, reader.top_params)


def param(params: Params, name: str) -> ParamValue | None:
    """``Message.get_param(name)`` (``name`` in lower case) from the message's ``params``."""
    for key, value in params:
        if key.lower() == name:
            # email.message._unquotevalue: an RFC 2231 value stays a tuple.
            if isinstance(value, tuple):
                return value[0], value[1], email.utils.unquote(value[2])
            return email.utils.unquote(value)
    return None


def boundary(params: Params) -> str | None:
    """``Message.get_boundary()`` from the message's ``params``."""
    value = param(params, "boundary")
    return None if value is None else email.utils.collapse_rfc2231_value(value).rstrip()


class _Reader:
    """``FeedParser`` state: the input lines, the read position and the end-of-part matchers."""

    __slots__ = ("depth", "ends", "last", "last_text", "lines", "pos", "top_params")

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.pos = 0
        #: Delimiter matchers of the enclosing multiparts, outermost first. Each one only
        #: matches a line that starts with "--" (the escaped separator begins the pattern),
        #: which lets every other line skip the regexes.
        self.ends: list[_Matcher] = []
        #: FeedParser._last, the part whose trailing newline belongs to the next delimiter, and
        #: its text when it is a leaf (None for a multipart, whose payload is never trimmed).
        self.last: Message | None = None
        self.last_text: str | None = None
        self.top_params: Params | None = None
        #: Parts above the one being read (see _MAX_DEPTH).
        self.depth = 0

    def readline(self) -> str:
        """The next line, or '' at the end of input or at a line an enclosing part ends on."""
        if self.pos >= len(self.lines):
            return ""
        line = self.lines[self.pos]
        if self.ends and line.startswith("--"):
            for ends_here in reversed(self.ends):
                if ends_here(line) is not None:
                    return ""
        self.pos += 1
        return line

    def rest(self) -> str:
        """Every line up to the end of the current part (FeedParser's ``for line in input``)."""
        lines = self.lines
        start = self.pos
        stop = len(lines)
        if self.ends:
            # Only lines starting with "--" can end the part; they are picked out in C
            # (compress/map/islice), not by a Python step per line.
            dashed = map(_STARTS_WITH_DASHES, itertools.islice(lines, start, stop))
            for index in itertools.compress(range(start, stop), dashed):
                line = lines[index]
                if any(ends_here(line) is not None for ends_here in self.ends):
                    stop = index
                    break
        self.pos = stop
        return "".join(lines[start:stop])

    def part(self, parent: Message | None, parent_type: str = "") -> Message:
        """``FeedParser._parsegen`` for one part, attached to ``parent``."""
        if parent_type == _DIGEST:
            raise _GiveUp  # children of a digest default to message/rfc822
        msg = Message()
        if parent is not None:
            parent.attach(msg)
        self.last = msg
        self.last_text = None
        header_lines: list[str] = []
        while True:
            line = self.readline()
            if not line:
                break
            if not _HEADER_LINE.match(line):
                if not _NEWLINE.match(line):
                    self.pos -= 1  # not the blank separator: the body starts here
                break
            header_lines.append(line)
        _set_fields(msg, header_lines)
        ctype = msg.get_content_type()
        maintype = ctype.split("/")[0]
        if ctype == _DELIVERY_STATUS:
            raise _GiveUp  # field blocks, each parsed as a message of its own
        if maintype == "message":
            # What follows is another message (a message/rfc822 that escaped the renaming,
            # an unknown message/* type): its parts go on to the end of this one.
            self._nested(msg, ctype)
        elif maintype == "multipart":
            self._multipart(msg, ctype, top=parent is None)
        else:
            text = self.rest()
            msg.set_payload(text)
            self.last_text = text
        return msg

    def _nested(self, parent: Message, parent_type: str) -> None:
        """Read one child part of ``parent``."""
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _GiveUp
        self.part(parent, parent_type)
        self.depth -= 1

    def _multipart(self, msg: Message, ctype: str, *, top: bool) -> None:
        # get_params() once rather than get_boundary(): the caller asks the top-level part for
        # its report-type as well, and every get_param() parses the whole field again.
        params: Params | None = msg.get_params(unquote=False)
        if top:
            self.top_params = params
        separator = boundary(params) if params is not None else None
        if separator is None:
            msg.set_payload(self.rest())
            return
        matcher = _delimiter("--" + separator)
        in_preamble = True
        preamble: list[str] = []
        while True:
            line = self.readline()
            if not line:
                break
            found = matcher(line)
            if found is None:
                preamble.append(line)  # only the preamble has lines that are no delimiter
                continue
            if found:
                break
            if in_preamble:
                # The first delimiter: the stdlib reads it again as the start of a part.
                in_preamble = False
                self.pos -= 1
                continue
            # Repeated delimiter lines make no empty parts.
            while matcher(line := self.readline()) is not None:
                pass
            if line:
                self.pos -= 1
            self.ends.append(matcher)
            self._nested(msg, ctype)
            self._trim_last()
            self.ends.pop()
            self.last = msg
            self.last_text = None
        if in_preamble:
            # No delimiter at all: the text is the payload; the rest (an epilogue) is dropped.
            msg.set_payload("".join(preamble))
        self.rest()  # the epilogue (or nothing, without a close delimiter) ends the part

    def _trim_last(self) -> None:
        """The newline before a delimiter belongs to the delimiter, not to the part before."""
        last, text = self.last, self.last_text
        if last is None or text is None:
            return
        if text.endswith("\r\n"):
            last.set_payload(text[:-2])
        elif text.endswith(("\r", "\n")):
            last.set_payload(text[:-1])


def _delimiter(separator: str) -> _Matcher:
    """The feed parser's delimiter regex for ``separator`` (``--`` and the boundary) as string
    tests: every bounce has a boundary of its own, and compiling that regex cost more than
    reading the part."""
    size = len(separator)

    def matcher(line: str) -> bool | None:
        if not line.startswith(separator):
            return None
        rest = line[size:]
        close = rest.startswith("--")
        if close:
            rest = rest[2:]
        return close if rest.lstrip(" \t") in _DELIMITER_ENDS else None

    return matcher


def _set_fields(msg: Message, lines: list[str]) -> None:
    """``FeedParser._parse_headers`` with the compat32 ``header_source_parse``."""
    field: list[str] = []
    for line in lines:
        if line[0] in " \t":
            if field:
                field.append(line)
            continue  # a continuation line with no field before it is dropped
        if field:
            msg.set_raw(*_name_value(field))
            field = []
        if line.startswith(_UNIX_FROM):
            raise _GiveUp  # an envelope line: unixfrom, misplaced, or the body's first line
        if line.find(":") == 0:
            continue  # a field with no name is dropped
        field = [line]
    if field:
        msg.set_raw(*_name_value(field))


def _name_value(lines: list[str]) -> tuple[str, str]:
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    if len(value) > MAX_FIELD_CHARS:
        value = value[:MAX_FIELD_CHARS]
    return name, value.rstrip("\r\n")
