"""Bodies of templated jobs: a campaign's template rendered with each recipient's variables.

A templated job (docs/compose.md, "Campaign templates") points at a content without subject,
text or HTML (its sender, headers, attachments) and carries its campaign's template version and
its variables. Per claimed batch this costs at most two queries (the base contents and the
template versions not compiled yet); each job's MIME body is then built for it alone, since its
text is its own, in the job's task when it is about to be sent. A template that cannot be
rendered for a job fails that job with the reason; no message is ever sent half-rendered.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from engine import metrics
from engine.compose.mime import ComposedBody, build_body
from engine.compose.template import CompiledTemplate, TemplateCache, TemplateSource
from engine.errors import ComposeError, TemplateError
from engine.model import Content
from engine.store import campaigns as campaign_store
from engine.store import content as content_store
from engine.store.jobs import ClaimedJob

log = logging.getLogger("engine.dispatch")


class PendingRender:
    """One templated job's body, rendered when the job is about to be sent (in its own task,
    so a batch of renders never blocks the event loop at once) and never for a job that is
    held or suppressed."""

    __slots__ = ("base", "compiled", "variables")

    def __init__(
        self, base: Content, compiled: CompiledTemplate, variables: dict[str, Any]
    ) -> None:
        self.base = base
        self.compiled = compiled
        self.variables = variables

    def render(self) -> ComposedBody | ComposeError:
        """The job's MIME body, or why its template cannot be rendered for it."""
        try:
            rendered = self.compiled.render(self.variables)
            content = msgspec.structs.replace(
                self.base, subject=rendered.subject, text=rendered.text, html=rendered.html
            )
            return build_body(content)
        except ComposeError as exc:
            metrics.TEMPLATE_RENDER_FAILURES.inc()
            return exc


Body = ComposedBody | ComposeError | PendingRender | None


def resolve(body: Body) -> ComposedBody | ComposeError | None:
    """A job's body to send: rendered now when it is a templated job's."""
    return body.render() if isinstance(body, PendingRender) else body


class TemplatedBodies:
    """Prepares templated jobs; compiled templates and base contents are cached."""

    def __init__(self, pool: asyncpg.Pool, max_templates: int = 512, max_bases: int = 4096):
        self.pool = pool
        self.templates = TemplateCache(max_templates)
        self.max_bases = max_bases
        self._bases: OrderedDict[tuple[str, bytes], Content] = OrderedDict()

    async def prepare(self, claimed: Sequence[ClaimedJob]) -> dict[int, Body]:
        """Per templated job id, what renders its body (or why it cannot have one); other jobs
        are left out. At most two queries, for what the caches lack."""
        jobs = [j for j in claimed if j.template_version is not None and j.campaign_id]
        if not jobs:
            return {}
        await self._load_bases({(j.tenant_id, j.content_sha256) for j in jobs})
        errors = await self._compile({_key(j) for j in jobs})
        out: dict[int, Body] = {}
        for job in jobs:
            key = _key(job)
            base = self._bases.get((job.tenant_id, job.content_sha256))
            compiled = self.templates.get(key)
            if key in errors:
                out[job.id] = errors[key]
            elif base is None or compiled is None:
                out[job.id] = ComposeError("content or campaign template missing")
            else:
                out[job.id] = PendingRender(base, compiled, job.variables or {})
        return out

    async def _load_bases(self, keys: set[tuple[str, bytes]]) -> None:
        missing = [k for k in keys if k not in self._bases]
        for k in keys - set(missing):
            self._bases.move_to_end(k)
        if not missing:
            return
        loaded = await content_store.load(self.pool, missing)
        self._bases.update(loaded)
        while len(self._bases) > self.max_bases:
            self._bases.popitem(last=False)

    async def _compile(
        self, keys: set[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], ComposeError]:
        missing = [k for k in keys if k not in self.templates]
        if not missing:
            return {}
        stored = await campaign_store.load(self.pool, missing)
        errors: dict[tuple[str, str, int], ComposeError] = {}
        for key in missing:
            found = stored.get(key)
            if found is None:
                errors[key] = TemplateError(f"campaign {key[1]!r} version {key[2]} not found")
                continue
            try:
                self.templates.put(key, TemplateSource(found.subject, found.text, found.html))
            except TemplateError as exc:
                log.warning("campaign template does not compile", extra={"error": str(exc)})
                errors[key] = exc
        return errors


def _key(job: ClaimedJob) -> tuple[str, str, int]:
    return (job.tenant_id, job.campaign_id or "", job.template_version or 0)
