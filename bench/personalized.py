"""``python -m bench e2e --personalized``: the same e2e run with a templated campaign.

Every message has its own body: one campaign template (subject, text, HTML) stored once, and
per-recipient variables on each job, rendered by the engine at send time. Each message therefore
has its own MIME body and its own DKIM body hash (``bh=``), where a plain campaign composes one
body and hashes it once. Reported beside the plain run: ``personalized_msg_s`` (and its CPU per
message), and two micro figures measured in this process on the same template:
``render_us_per_msg`` (Jinja2 render of the three parts), ``mime_us_per_msg`` (building that
message's MIME body, which a plain campaign does once) and
``body_hash_us_per_msg`` (relaxed canonicalisation + SHA-256 of one rendered body: the DKIM cost
a per-recipient body adds, as the signer cannot reuse one campaign-wide body hash).
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import msgspec
import orjson

from engine import campaigns
from engine.compose.mime import build_body
from engine.compose.template import CompiledTemplate, TemplateSource
from engine.dkim.canon import body_hash
from engine.model import Content

_PARA = (
    "Thank you for being part of the PenguinMails community. This month we shipped faster "
    "campaign previews, a new suppression export and friendlier bounce reports. "
)
SOURCE = TemplateSource(
    subject="{{ first_name }}, your {{ month }} PenguinMails update",
    text="Hi {{ first_name }},\n\n"
    + _PARA * 10
    + "\n\nYour account {{ account }} has {{ credits }} credits left.\n"
    "{% for item in picks %}- {{ item }}\n{% endfor %}"
    "Manage your subscription: https://u.penguinmails.test/{{ token }}\n",
    html="<p>Hi {{ first_name }},</p><p>"
    + _PARA * 10
    + "</p><p>Account <b>{{ account }}</b>: {{ credits }} credits.</p>"
    "<ul>{% for item in picks %}<li>{{ item }}</li>{% endfor %}</ul>",
)


def variables(i: int) -> dict[str, Any]:
    """One recipient's values: every rendered body differs."""
    return {
        "first_name": f"Reader{i}",
        "month": "December",
        "account": f"ACC-{i:08d}",
        "credits": (i * 7919) % 10_000,
        "picks": [f"tip {i % 13}", f"guide {i % 29}", f"case study {i % 5}"],
        "token": f"{i:012x}",
    }


def job_docs(n: int, run: str, tenants: int = 1) -> list[bytes]:
    """``n`` templated jobs of campaign ``run`` (same tenants and sender as the plain run)."""
    from bench.e2e import DOMAIN, tenant_ids

    ids = tenant_ids(tenants)
    return [
        orjson.dumps(
            {
                "tenant_id": ids[i % len(ids)],
                "idempotency_key": f"{run}-p{i}",
                "from": f"news@{DOMAIN}",
                "to": f"user{i}@example.com",
                "campaign_id": run,
                "variables": variables(i),
                "list_unsubscribe": "https://u.penguinmails.test/x",
            }
        )
        for i in range(n)
    ]


async def store_template(pool: asyncpg.Pool, tenant_ids: list[str], run: str) -> None:
    """The campaign's template, stored once per tenant (as the platform would)."""
    for tenant in tenant_ids:
        await campaigns.set_template(pool, tenant, run, SOURCE)


def micro(n: int = 2000) -> dict[str, float]:
    """Render, MIME build and DKIM body hash of one personalised message (µs each)."""
    from bench.e2e import DOMAIN

    compiled = CompiledTemplate(SOURCE)
    base = Content(from_=f"news@{DOMAIN}", list_unsubscribe="https://u.penguinmails.test/x")
    t0 = time.perf_counter()
    rendered = [compiled.render(variables(i)) for i in range(n)]
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bodies = [
        build_body(msgspec.structs.replace(base, subject=r.subject, text=r.text, html=r.html))
        for r in rendered
    ]
    mime_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in bodies:
        body_hash(b.body)
    hash_s = time.perf_counter() - t0
    return {
        "render_us_per_msg": round(render_s / n * 1e6, 1),
        "mime_us_per_msg": round(mime_s / n * 1e6, 1),
        "body_hash_us_per_msg": round(hash_s / n * 1e6, 1),
        "personalized_body_bytes": round(sum(len(b.body) for b in bodies) / n),
    }
