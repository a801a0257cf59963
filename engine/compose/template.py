"""Campaign templates: Jinja2's immutable sandbox, compiled once, rendered per recipient.

A campaign is one template (subject, text, HTML) stored in the content tier; each job carries
its recipient's ``variables``. What a template may do is bounded here, whatever the tenant
writes (docs/compose.md, "Campaign templates"):

* no file access: the environments have no loader, and ``include``, ``import``, ``extends``,
  macros and call blocks are refused at compile time;
* no attribute access to internals: :class:`jinja2.sandbox.ImmutableSandboxedEnvironment`
  refuses ``__class__``-style attributes and mutating methods of lists and dicts;
* bounded loops: no loop inside a loop, no recursive loop, ``range`` at most
  :data:`MAX_RANGE` items and no ``namespace`` (so nothing carries over between iterations);
  a loop over a variable is bounded by the job's variables (16 KiB as JSON);
* bounded output: ``*`` and ``**`` are checked before they run, the filters that multiply
  their input (``center``, ``indent``, ``wordwrap``, ``replace``, ``format``...) are not
  offered, and rendering streams and stops past :data:`MAX_OUTPUT_BYTES` per part;
* bounded work: every string a render builds (``~``, rewritten into a checked call, the
  filters, ``*``) is charged to a budget of :data:`MAX_WORK_BYTES` per part, so chaining them
  through ``set`` cannot grow memory without bound;
* HTML is autoescaped; subject and text are not (they are not markup).

Compiled templates are cached per (tenant, campaign, version): a version never changes, so the
cache never needs invalidating. Sans-IO: strings in, strings out.
"""

from __future__ import annotations

import contextvars
import functools
import operator
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec
from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from engine.errors import TemplateError

MAX_TEMPLATE_BYTES = 256 * 1024  # per part, as submitted
MAX_OUTPUT_BYTES = 1024 * 1024  # per rendered part
MAX_WORK_BYTES = 4 * MAX_OUTPUT_BYTES  # text built by concatenation, filters and * per part
MAX_RANGE = 1000
MAX_LOOPS = 16  # for-loops per part
PARTS = ("subject", "text", "html")
#: Filters that cannot make their output much larger than their input.
_SAFE = "abs capitalize count d default e escape first float forceescape int join last length"
_SAFE += " list lower max min reverse round safe sort string striptags sum title trim truncate"
SAFE_FILTERS = frozenset(f"{_SAFE} unique upper urlencode wordcount".split())
#: Filters and tests whose operand may be missing without the template failing.
_GUARDS = frozenset({"default", "d"})
_GUARD_TESTS = frozenset({"defined", "undefined", "none"})
_REFUSED: tuple[tuple[type[nodes.Node], str], ...] = (
    (nodes.Extends, "extends"),
    (nodes.Include, "include"),
    (nodes.Import, "import"),
    (nodes.FromImport, "from ... import"),
    (nodes.Macro, "macro"),
    (nodes.CallBlock, "call blocks"),
)


#: The text a part's render has built so far (concatenation, filters, ``*``): every way a
#: template makes a longer string is charged here before or as it is made, so chaining them
#: (``{% set b = a ~ a %}`` ...) cannot grow memory without bound.
_WORK: contextvars.ContextVar[list[int]] = contextvars.ContextVar("template_work")


def _charge(size: int) -> None:
    work = _WORK.get(None)
    if work is None:
        return
    work[0] += size
    if work[0] > MAX_WORK_BYTES:
        raise SecurityError(f"the template builds over {MAX_WORK_BYTES} characters of text")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict) else 0


def _charged(func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose result is charged to the render (jinja's pass_* marks are kept)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = func(*args, **kwargs)
        _charge(_size(out))
        return out

    return wrapper


def _checked_join(join: Callable[..., Any]) -> Callable[..., Any]:
    """``join`` with its result's size checked before it is built (a separator multiplies)."""

    @functools.wraps(join)
    def wrapper(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(value)
        size = sum(len(str(x)) for x in items) + len(str(d)) * max(0, len(items) - 1)
        _charge(size)
        return join(eval_ctx, items, d, attribute)

    return wrapper


def _concat(join: Callable[[Iterable[Any]], str]) -> Callable[..., str]:
    def concat(*parts: Any) -> str:
        _charge(sum(len(p) if isinstance(p, str) else len(str(p)) for p in parts))
        return join(parts)

    return concat


class _ConcatToCall(NodeTransformer):
    """``a ~ b`` becomes ``__concat__(a, b)``, whose size is charged before it is built."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        call = nodes.Call(nodes.Name("__concat__", "load"), node.nodes, [], None, None)
        call.set_lineno(node.lineno)
        return call


def _bounded_range(*args: int) -> range:
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise SecurityError(f"range of {len(found)} items is over the limit of {MAX_RANGE}")
    return found


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with ``*`` and ``**`` bounded and a reduced set of globals."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError("exponent over 64 in a template")
            return operator.pow(left, right)
        for seq, times in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if sized and len(seq) * times > MAX_OUTPUT_BYTES:
                raise SecurityError("a repeated string or list is over the output limit")
            if sized:
                _charge(len(seq) * times)
        return operator.mul(left, right)


def _environment(autoescape: bool) -> _Sandbox:
    env = _Sandbox(loader=None, autoescape=autoescape, undefined=StrictUndefined)
    env.filters = {k: _charged(v) for k, v in env.filters.items() if k in SAFE_FILTERS}
    env.filters["join"] = _checked_join(env.filters["join"].__wrapped__)
    env.globals = {
        "range": _bounded_range,
        "dict": dict,
        "cycler": env.globals["cycler"],
        "__concat__": _concat(markup_join if autoescape else str_join),
    }
    return env


_PLAIN = _environment(False)
_HTML = _environment(True)


class TemplateSource(msgspec.Struct, frozen=True, omit_defaults=True):
    """A campaign's template as stored: the three parts (subject required, text or html)."""

    subject: str
    text: str | None = None
    html: str | None = None


class Rendered(msgspec.Struct, frozen=True):
    """One recipient's subject, text and HTML."""

    subject: str
    text: str | None
    html: str | None


def _check_shape(part: str, tree: nodes.Template) -> None:
    for kind, what in _REFUSED:
        if tree.find(kind) is not None:
            raise TemplateError(f"{part}: {what} is not allowed in a campaign template")
    loops = list(tree.find_all(nodes.For))
    if len(loops) > MAX_LOOPS:
        raise TemplateError(f"{part}: more than {MAX_LOOPS} for-loops")
    for loop in loops:
        if loop.recursive:
            raise TemplateError(f"{part}: recursive loops are not allowed")
        inner = [n for child in loop.body for n in child.find_all(nodes.For)]
        if inner or any(isinstance(child, nodes.For) for child in loop.body):
            raise TemplateError(f"{part}: a loop inside a loop is not allowed")


def _guarded(tree: nodes.Template) -> set[str]:
    """Names the template itself copes with being absent (``x|default(..)``, ``x is defined``)."""
    found: set[str] = set()
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        names = _GUARDS if isinstance(node, nodes.Filter) else _GUARD_TESTS
        if node.name in names and isinstance(node.node, nodes.Name):
            found.add(node.node.name)
    return found


def _parse(part: str, source: str, env: _Sandbox) -> nodes.Template:
    if len(source.encode("utf-8", "replace")) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"{part}: template over {MAX_TEMPLATE_BYTES} bytes")
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{part}: line {exc.lineno}: {exc.message}") from None
    _check_shape(part, tree)
    return tree


def required_variables(source: TemplateSource) -> list[str]:
    """Check a template and return the variable names every job must give (sorted).

    Raises :class:`TemplateError` naming the part and line of the first problem.
    """
    if not source.subject.strip():
        raise TemplateError("subject: a campaign template needs a subject")
    if source.text is None and source.html is None:
        raise TemplateError("text/html: a campaign template needs text, html or both")
    if "\r" in source.subject or "\n" in source.subject:
        raise TemplateError("subject: contains CR/LF (one line only)")
    needed: set[str] = set()
    for part in PARTS:
        value = getattr(source, part)
        if value is None:
            continue
        if "\x00" in value:
            raise TemplateError(f"{part}: contains a NUL character")
        tree = _parse(part, value, _HTML if part == "html" else _PLAIN)
        needed |= meta.find_undeclared_variables(tree) - _guarded(tree)
    return sorted(needed - set(_PLAIN.globals))


def missing_variables(required: Iterable[str], variables: Mapping[str, Any]) -> list[str]:
    """The required names a job's ``variables`` lacks."""
    return [name for name in required if name not in variables]


class CompiledTemplate:
    """The compiled parts of one template version; :meth:`render` is safe to call per job."""

    def __init__(self, source: TemplateSource) -> None:
        required_variables(source)  # refuses what the sandbox's shape rules forbid
        self.parts: dict[str, Any] = {}
        for part in PARTS:
            value = getattr(source, part)
            if value is not None:
                env = _HTML if part == "html" else _PLAIN
                tree = _ConcatToCall().visit(env.parse(value))
                tree.set_environment(env)
                code = env.compile(tree)
                self.parts[part] = env.template_class.from_code(env, code, env.make_globals(None))

    def render(self, variables: Mapping[str, Any]) -> Rendered:
        """Render every part for one recipient; :class:`TemplateError` names what failed."""
        out: dict[str, str | None] = dict.fromkeys(PARTS)
        for part, template in self.parts.items():
            out[part] = _render_part(part, template, variables)
        subject = " ".join((out["subject"] or "").split())  # one header line, whatever was given
        return Rendered(subject=subject, text=out["text"], html=out["html"])


def _render_part(part: str, template: Any, variables: Mapping[str, Any]) -> str:
    chunks: list[str] = []
    size = 0
    token = _WORK.set([0])
    try:
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > MAX_OUTPUT_BYTES:
                raise TemplateError(f"{part}: rendered output over {MAX_OUTPUT_BYTES} characters")
            chunks.append(chunk)
    except TemplateError:
        raise
    except JinjaError as exc:
        raise TemplateError(f"{part}: {exc.message or exc!r}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
        raise TemplateError(f"{part}: {type(exc).__name__}: {exc}") from None
    finally:
        _WORK.reset(token)
    return "".join(chunks)


class TemplateCache:
    """Compiled templates per (tenant, campaign, version), least recently used out first."""

    def __init__(self, max_items: int = 512) -> None:
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, str, int], CompiledTemplate] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: tuple[str, str, int]) -> bool:
        return key in self._items

    def get(
        self, key: tuple[str, str, int], load: Callable[[], TemplateSource] | None = None
    ) -> CompiledTemplate | None:
        """The compiled template of ``key``; compiled from ``load()`` when missing and given."""
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            return found
        if load is None:
            return None
        return self.put(key, load())

    def put(self, key: tuple[str, str, int], source: TemplateSource) -> CompiledTemplate:
        """Compile and keep ``source`` under ``key``."""
        compiled = CompiledTemplate(source)
        self._items[key] = compiled
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return compiled
