"""Bodies of templated jobs: a campaign's template rendered with each recipient's variables.

A templated job (docs/compose.md, "Campaign templates") points at a content without subject,
text or HTML (its sender, headers, attachments) and carries its campaign's template version and
its variables. Per claimed batch this costs at most two queries (the base contents and the
template versions not compiled yet); each job's MIME body is then built for it alone, since its
text is its own. A template that cannot be rendered for a job fails that job with the reason;
no message is ever sent from a half-rendered template.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import asyncpg
import msgspec

from engine import metrics
from engine.compose.mime import ComposedBody, build_body
from engine.compose.template import TemplateCache, TemplateSource
from engine.errors import ComposeError, TemplateError
from engine.model import Content
from engine.store import campaigns as campaign_store
from engine.store import content as content_store
from engine.store.jobs import ClaimedJob

log = logging.getLogger("engine.dispatch")


class TemplatedBodies:
    """Renders templated jobs; compiled templates and base contents are cached."""

    def __init__(self, pool: asyncpg.Pool, max_templates: int = 512, max_bases: int = 4096):
        self.pool = pool
        self.templates = TemplateCache(max_templates)
        self.max_bases = max_bases
        self._bases: OrderedDict[tuple[str, bytes], Content] = OrderedDict()

    async def bodies(self, claimed: Sequence[ClaimedJob]) -> dict[int, ComposedBody | ComposeError]:
        """Per templated job id, its body or why it cannot have one (other jobs are skipped)."""
        jobs = [j for j in claimed if j.template_version is not None and j.campaign_id]
        if not jobs:
            return {}
        await self._load_bases({(j.tenant_id, j.content_sha256) for j in jobs})
        errors = await self._compile(
            {(j.tenant_id, j.campaign_id or "", j.template_version or 0) for j in jobs}
        )
        out: dict[int, ComposedBody | ComposeError] = {}
        for job in jobs:
            out[job.id] = self._body(job, errors)
        return out

    def _body(
        self, job: ClaimedJob, errors: dict[tuple[str, str, int], ComposeError]
    ) -> ComposedBody | ComposeError:
        key = (job.tenant_id, job.campaign_id or "", job.template_version or 0)
        if key in errors:
            return errors[key]
        base = self._bases.get((job.tenant_id, job.content_sha256))
        compiled = self.templates.get(key)
        if base is None or compiled is None:
            return ComposeError("content or campaign template missing")
        try:
            rendered = compiled.render(job.variables or {})
            content = msgspec.structs.replace(
                base, subject=rendered.subject, text=rendered.text, html=rendered.html
            )
            body = build_body(content)
        except ComposeError as exc:
            metrics.TEMPLATE_RENDER_FAILURES.inc()
            return exc
        return body

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
