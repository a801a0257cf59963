"""DKIM signing for the dispatcher: key lookup, body-hash cache, signing off the event loop.

The body hash of a campaign's shared body is computed once (the body bytes object is reused from
the body cache, so the dict lookup is a pointer compare); each message then costs one header
hash and one private-key operation in the signer pool (processes or threads).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from engine import metrics
from engine.compose.mime import ComposedBody
from engine.config import Config
from engine.dkim import canon
from engine.dkim import store as key_store
from engine.dkim.crypto_box import KeyBox
from engine.dkim.keys import KeyRing
from engine.dkim.pool import SignerPool
from engine.dkim.procs import Split
from engine.periodic import Periodic


class DkimSigner:
    """The :class:`~engine.dispatch.seams.Signer` the daemon wires in."""

    def __init__(self, ring: KeyRing, pool: SignerPool, box: KeyBox | None = None) -> None:
        self.ring = ring
        self.pool = pool
        self.box = box
        self._hashes: OrderedDict[bytes, bytes] = OrderedDict()

    def _body_hash(self, body: ComposedBody) -> bytes:
        bh = self._hashes.get(body.body)
        if bh is None:
            bh = self._hashes[body.body] = canon.body_hash(body.body)
            if len(self._hashes) > 1024:
                self._hashes.popitem(last=False)
        return bh

    async def sign(
        self, tenant_id: str, domain: str, message: bytes, body: ComposedBody | None
    ) -> bytes:
        keys = self.ring.keys_for(domain, tenant_id=tenant_id)  # raises when required + missing
        if not keys:
            metrics.DKIM_UNSIGNED.inc()
            return message
        bh = split = None
        if body is not None and body.message_id is None:
            bh = self._body_hash(body)
            split = message_split(message, body)
        started = time.perf_counter()
        signed = await self.pool.sign_message(message, keys, body_hash=bh, split=split)
        metrics.DKIM_SIGN.observe(time.perf_counter() - started)
        return signed

    async def refresh(self, db: Any) -> None:
        """Load the active keys stored in the oltp tier (encrypted at rest)."""
        if self.box is None:
            return
        self.ring.replace_stored(await key_store.fetch_active(db), self.box)

    def refresh_task(self, db: Any, every_s: float = 60.0) -> Periodic:
        """Reload stored keys every ``every_s``; a failure keeps signing with the keys we have."""

        async def refresh() -> None:
            await self.refresh(db)

        return Periodic("dkim-keys", refresh, every_s)

    def close(self) -> None:
        self.pool.close()

    async def aclose(self) -> None:
        """Close, and wait for the signer processes (if any) to end."""
        await self.pool.aclose()


def message_split(message: bytes, body: ComposedBody) -> Split | None:
    """Where ``message`` (rendered from ``body``) has its per-recipient fields end and
    ``body.head`` begin, so a signer process parses the shared head once; None when the message
    is not made that way. Three C-level comparisons, no scan for the empty line."""
    head = body.head
    prefix = len(message) - body.size
    if (
        prefix >= 0
        and message.endswith(body.body)
        and message.startswith(head, prefix)
        and message.startswith(b"\r\n", prefix + len(head))
        and (prefix == 0 or message.startswith(b"\n", prefix - 1))
        and head[:1] not in (b" ", b"\t")
    ):
        return prefix, head
    return None


async def build_signer(cfg: Config) -> DkimSigner:
    """Load the configured keys now, so a bad key stops the start instead of a send.

    With ``[dkim] check_dns = true`` a key whose TXT record is missing or does not match is
    dropped before the first send (its domain is then held when ``required``, never signed with
    a key receivers cannot verify).
    """
    ring = KeyRing.from_config(cfg.dkim)
    if cfg.dkim.check_dns:
        await ring.drop_unpublished(timeout=cfg.dns.timeout_s)
    box = (
        KeyBox.from_config(cfg.dkim) if (cfg.dkim.master_key or cfg.dkim.master_key_file) else None
    )
    pool = SignerPool(cfg.dkim.signer_workers or None, processes=cfg.dkim.signer == "process")
    await pool.start()
    return DkimSigner(ring, pool, box)
