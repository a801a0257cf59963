"""Campaign templates (engine/compose/template.py): what a tenant's template may and may not do.

Rendering is what the recipient gets, so each case asserts the rendered text or the refusal a
tenant sees; the sandbox bounds (no files, no internals, bounded loops and output) are checked
with the templates an attacker would write.
"""

from __future__ import annotations

import pytest

from engine.compose.template import (
    CompiledTemplate,
    TemplateCache,
    TemplateSource,
    missing_variables,
    required_variables,
)
from engine.errors import TemplateError


def render(text: str, **variables: object) -> str:
    out = CompiledTemplate(TemplateSource(subject="s", text=text)).render(variables).text
    assert out is not None
    return out


def test_renders_per_recipient_and_escapes_html_only() -> None:
    compiled = CompiledTemplate(
        TemplateSource(
            subject="Hi {{ name }}{{ tail }}",
            text="Dear {{ name }}: {% for x in items %}{{ x }};{% endfor %}",
            html="<p>{{ name }}</p>",
        )
    )
    out = compiled.render({"name": "<Ann & co>", "items": [1, 2], "tail": "\r\nBcc: x@y"})
    assert out.subject == "Hi <Ann & co> Bcc: x@y"  # one header line: no injection
    assert out.text == "Dear <Ann & co>: 1;2;"
    assert out.html == "<p>&lt;Ann &amp; co&gt;</p>"


def test_required_variables_leave_out_guarded_ones() -> None:
    source = TemplateSource(
        subject="{{ first }}",
        text="{{ nick | default('friend') }} {% if vip is defined %}VIP {{ tier }}{% endif %}"
        " {% for p in picks %}{{ p }}{% endfor %}",
    )
    assert required_variables(source) == ["first", "picks", "tier"]
    assert missing_variables(["first", "picks"], {"first": "A"}) == ["picks"]
    assert render("{{ nick | default('friend') }}") == "friend"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{% include 'x.txt' %}", "include is not allowed"),
        ("{% import 'x' as y %}", "import is not allowed"),
        ("{% from 'x' import y %}", "from ... import is not allowed"),
        ("{% extends 'base' %}", "extends is not allowed"),
        ("{% macro m() %}{{ m() }}{% endmacro %}", "macro is not allowed"),
        ("{% for a in x %}{% for b in x %}{% endfor %}{% endfor %}", "loop inside a loop"),
        ("{% for a in x recursive %}{{ loop(a) }}{% endfor %}", "recursive loops"),
        ("{{ name ", "line 1"),
        ("a\x00b", "NUL"),
    ],
)
def test_refused_when_stored(text: str, why: str) -> None:
    with pytest.raises(TemplateError, match=why):
        required_variables(TemplateSource(subject="s", text=text))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{{ name.__class__.__mro__ }}", "unsafe"),
        ("{{ items.append(1) }}", "unsafe"),
        ("{{ 'x' * 100000000 }}", "over the output limit"),
        ("{{ 2 ** 100000 }}", "exponent"),
        ("{{ range(10**6) | list }}", "range of"),
        ("{% for i in range(1000) %}{{ big }}{% endfor %}", "rendered output over"),
        ("{{ missing }}", "'missing' is undefined"),
        ("{{ 1 // zero }}", "ZeroDivisionError"),
        ("{{ name | center(10**8) }}", "No filter named 'center'"),
        ("{{ lipsum(1000) }}", "undefined"),
        # Chained concatenation, a multiplying separator, a long ~ chain: the work budget.
        (
            "{% set a = big ~ big ~ big ~ big %}{% set b = a ~ a ~ a ~ a %}"
            "{% set c = b ~ b ~ b ~ b %}{% set d = c ~ c ~ c ~ c %}{{ d | length }}",
            "builds over",
        ),
        ("{{ (big | list) | join(big) }}", "builds over"),
        ("{{ " + " ~ ".join(["big"] * 2000) + " }}", "builds over"),
        ("{% for i in range(1000) %}{% set x = big ~ big %}{% endfor %}", "builds over"),
    ],
)
def test_sandbox_bounds_at_render(text: str, why: str) -> None:
    variables = {"name": "n", "items": [1], "zero": 0, "big": "x" * 16_000}
    with pytest.raises(TemplateError, match=why):
        try:
            render(text, **variables)
        except TemplateError:
            raise
        except Exception as exc:  # a compile-time refusal of an unknown filter
            raise TemplateError(str(exc)) from None


def test_concatenation_still_escapes_in_html() -> None:
    compiled = CompiledTemplate(
        TemplateSource(subject="{{ a ~ '!' }}", text="{{ a ~ b }}", html="<i>{{ a ~ '&' }}</i>")
    )
    out = compiled.render({"a": "<A>", "b": 2})
    assert (out.subject, out.text, out.html) == ("<A>!", "<A>2", "<i>&lt;A&gt;&amp;</i>")


def test_cache_compiles_a_version_once() -> None:
    cache = TemplateCache(max_items=2)
    loads: list[int] = []

    def load() -> TemplateSource:
        loads.append(1)
        return TemplateSource(subject="{{ a }}", text="t")

    key = ("acme", "spring", 1)
    first = cache.get(key, load)
    assert cache.get(key, load) is first and len(loads) == 1
    cache.get(("acme", "spring", 2), load)
    cache.get(("acme", "spring", 3), load)
    assert key not in cache and len(cache) == 2
