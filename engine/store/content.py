"""Content tier: bodies stored once per (tenant, SHA-256), zlib-compressed; attachments deduped.

A 10k-recipient campaign has one :class:`~engine.model.Content`; its jobs point at it by hash.
Attachments are split out and stored by their own hash, so two campaigns that carry the same PDF
store it once. Two codecs exist: ``zlib-msgpack`` written by the Python enqueue path and ``json``
written by the SQL function ``engine.enqueue(jsonb)`` (PostgreSQL's TOAST compresses those).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence

import asyncpg
import msgspec

from engine.errors import StoreError
from engine.model import Attachment, Content
from engine.store.pool import Conn

CODEC = "zlib-msgpack"
_ENCODER = msgspec.msgpack.Encoder()
_JSON_DECODER = msgspec.json.Decoder(Content)


class _StoredContent(msgspec.Struct, frozen=True, array_like=True):
    """What the blob holds: the content with attachment bytes replaced by their hashes."""

    content: Content
    attachment_hashes: list[bytes]


_DECODER = msgspec.msgpack.Decoder(_StoredContent)


class EncodedContent(msgspec.Struct, frozen=True):
    """A content ready to store: its hash, compressed blob, and the attachments split out."""

    sha256: bytes
    blob: bytes
    size: int
    from_addr: str | None
    subject: str | None
    headers: dict[str, str]
    attachments: list[tuple[bytes, bytes, int]]  # (sha256, compressed data, size)


def encode(content: Content) -> EncodedContent:
    """Hash and compress a content (sans-IO). Equal contents give equal hashes."""
    hashes: list[bytes] = []
    atts: list[tuple[bytes, bytes, int]] = []
    stripped: list[Attachment] = []
    for att in content.attachments:
        h = hashlib.sha256(att.content).digest()
        hashes.append(h)
        atts.append((h, zlib.compress(att.content, 6), len(att.content)))
        stripped.append(msgspec.structs.replace(att, content=b""))
    doc = _ENCODER.encode(
        _StoredContent(msgspec.structs.replace(content, attachments=stripped), hashes)
    )
    return EncodedContent(
        sha256=hashlib.sha256(doc).digest(),
        blob=zlib.compress(doc, 6),
        size=len(doc),
        from_addr=content.from_,
        subject=content.subject,
        headers=dict(content.headers),
        attachments=atts,
    )


#: A reused body (of another server's new jobs) is young again; cheap: at most once an hour.
_TOUCH = (
    "(tenant_id, sha256) DO UPDATE SET created_at = now()"
    " WHERE c.created_at < now() - interval '1 hour'"
)


async def store(
    conn: Conn, tenant_ids: Sequence[str], items: Sequence[EncodedContent], *, touch: bool = False
) -> None:
    """Insert contents (and their attachments) not stored yet; a few statements per batch.

    ``touch`` (the content tier on another server, stored before the jobs that use it): a body
    stored over an hour ago gets ``created_at`` now, so the retention sweep, which checks the
    jobs on the other server and then deletes by age, cannot delete it under a new job.
    """
    if not items:
        return
    att_rows = {
        (t, h): (d, n) for t, e in zip(tenant_ids, items, strict=True) for h, d, n in e.attachments
    }
    if att_rows:
        keys = list(att_rows)
        await conn.execute(
            "INSERT INTO content.attachments (tenant_id, sha256, data, size)"
            " SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int[])"
            " ON CONFLICT DO NOTHING",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [att_rows[k][0] for k in keys],
            [att_rows[k][1] for k in keys],
        )
    await conn.execute(
        "INSERT INTO content.email_content AS c (tenant_id, sha256, codec, body, size)"
        " SELECT t, h, $5, b, s FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int[])"
        " AS u(t, h, b, s) ON CONFLICT " + (_TOUCH if touch else "DO NOTHING"),
        list(tenant_ids),
        [e.sha256 for e in items],
        [e.blob for e in items],
        [e.size for e in items],
        CODEC,
    )
    await conn.execute(
        "INSERT INTO content.email_messages (tenant_id, sha256, from_addr, subject, headers)"
        " SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::jsonb[])"
        " ON CONFLICT DO NOTHING",
        list(tenant_ids),
        [e.sha256 for e in items],
        [e.from_addr for e in items],
        [e.subject for e in items],
        [e.headers for e in items],
    )


def _decode(codec: str, body: bytes) -> tuple[Content, list[bytes]]:
    if codec == CODEC:
        stored = _DECODER.decode(zlib.decompress(body))
        return stored.content, stored.attachment_hashes
    if codec == "json":
        return _JSON_DECODER.decode(body), []
    raise StoreError(f"content stored with unknown codec {codec!r}", hint="upgrade the engine")


async def load(
    pool: asyncpg.Pool, keys: Iterable[tuple[str, bytes]]
) -> dict[tuple[str, bytes], Content]:
    """Fetch and inflate contents by (tenant_id, sha256): two queries whatever the count."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    rows = await pool.fetch(
        "SELECT c.tenant_id, c.sha256, c.codec, c.body FROM content.email_content c"
        " JOIN unnest($1::text[], $2::bytea[]) AS k(t, h) ON c.tenant_id = k.t AND c.sha256 = k.h",
        [k[0] for k in wanted],
        [k[1] for k in wanted],
    )
    decoded = {(r["tenant_id"], bytes(r["sha256"])): _decode(r["codec"], r["body"]) for r in rows}
    need = {(t, h) for (t, _), (_, hs) in decoded.items() for h in hs}
    data: dict[tuple[str, bytes], bytes] = {}
    if need:
        att = await pool.fetch(
            "SELECT a.tenant_id, a.sha256, a.data FROM content.attachments a"
            " JOIN unnest($1::text[], $2::bytea[]) AS k(t, h) ON a.tenant_id = k.t"
            " AND a.sha256 = k.h",
            [k[0] for k in need],
            [k[1] for k in need],
        )
        data = {(r["tenant_id"], bytes(r["sha256"])): zlib.decompress(r["data"]) for r in att}
    out: dict[tuple[str, bytes], Content] = {}
    for key, (content, hashes) in decoded.items():
        if hashes:
            atts = [
                msgspec.structs.replace(a, content=data[(key[0], h)])
                for a, h in zip(content.attachments, hashes, strict=True)
            ]
            content = msgspec.structs.replace(content, attachments=atts)
        out[key] = content
    return out
