"""The direct MIME writer for text/html content gives the stdlib's bytes exactly.

``_text_mime`` writes what ``EmailMessage.set_content``/``add_alternative`` and the generator
make for text, HTML or both without attachments; ``_stdlib_mime`` is that stdlib path. Both
draw their multipart boundary from the generator's random maker, so seeding ``random`` the same
before each makes the outputs comparable byte for byte.
"""

from __future__ import annotations

import random

import pytest

from engine.compose.mime import POLICY, _stdlib_mime, _text_mime, build_body
from engine.model import Attachment, Content

SAMPLES = [
    "",
    "\n",
    "Hello world",
    "Hello world\n",
    "Hello\r\nworld\r\n",
    "bare\rcarriage\rreturns\r",
    "mixed\r\nline\nendings\rhere",
    "x" * 78 + "\n" + "y" * 79 + "\n",
    "z" * 1000,
    "trailing spaces   \nand\ttabs\t\n",
    "From the start\n.dot\n..two dots\n",
    "--===============0000000000000000000==\n",
    "Grüße aus Köln\n",
    "日本語のテキスト\n" * 20,
    "emoji 😀🎉 " * 30,
    "\x0b vertical tab \x0c form feed \x1c\x1d\x1e \x85 \u2028 \u2029 separators\n",
    "=3D already looks encoded =\n",
    "<html><body>" + "<p>Paragraph with <b>bold</b> and a link.</p>\n" * 40 + "</body></html>",
]


def both(content: Content, seed: int) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    random.seed(seed)
    fast = _text_mime(content)
    random.seed(seed)
    slow = _stdlib_mime(content, POLICY)
    return fast, slow


@pytest.mark.parametrize("i", range(len(SAMPLES)))
def test_each_sample_as_text_html_and_both(i: int) -> None:
    text = SAMPLES[i]
    other = SAMPLES[(i + 7) % len(SAMPLES)]
    for content in (
        Content(from_="a@example.com", text=text),
        Content(from_="a@example.com", html=text),
        Content(from_="a@example.com", text=text, html=other),
    ):
        fast, slow = both(content, i)
        assert fast == slow


def test_random_texts_give_the_same_bytes() -> None:
    rng = random.Random(2026)
    pieces = [
        "a",
        "Z",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\r",
        "é",
        "ß",
        "中",
        "😀",
        "=",
        ".",
        "-",
        "x" * 90,
    ]
    for seed in range(400):

        def text() -> str:
            return "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 60)))

        kind = seed % 3
        content = Content(
            from_="a@example.com",
            text=text() if kind != 1 else None,
            html=text() if kind != 0 else None,
        )
        fast, slow = both(content, seed)
        assert fast == slow, content


def test_build_body_takes_the_direct_path_only_where_it_is_exact() -> None:
    plain = Content(from_="a@example.com", subject="s", text="hi\n", html="<p>hi</p>")
    random.seed(1)
    body = build_body(plain)
    random.seed(1)
    head, data = _stdlib_mime(plain, POLICY)
    assert body.head.endswith(head) and body.body == data
    # Attachments (and UTF-8 From addresses) still go through the stdlib.
    with_file = Content(
        from_="a@example.com",
        text="see attached",
        attachments=[Attachment(filename="a.txt", content_type="text/plain", content=b"x")],
    )
    assert b"multipart/mixed" in build_body(with_file).head


def test_the_from_field_is_made_once_per_address_and_errors_every_time() -> None:
    from engine.compose.mime import _from_line
    from engine.errors import ComposeError

    _from_line.cache_clear()
    first = build_body(Content(from_="Zoë <news@acme.example>", subject="a", text="x"))
    second = build_body(Content(from_="Zoë <news@acme.example>", subject="b", text="y"))
    assert first.head.split(b"\r\n")[0] == second.head.split(b"\r\n")[0]
    assert first.head.startswith(b"From: =?utf-8?")  # encoded as before
    assert _from_line.cache_info().hits == 1
    for _ in range(2):
        with pytest.raises(ComposeError, match="from"):
            build_body(Content(from_="not an address", text="x"))
