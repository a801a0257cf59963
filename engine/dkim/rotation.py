"""Key rotation by selector without a gap: a stored key goes live only once DNS publishes it.

1. ``insert_key`` stores the new key ``pending`` (under a new selector); the operator publishes
   its TXT record. The old key keeps signing meanwhile.
2. :func:`promote` checks the record; when it matches, the new key becomes ``active`` and the old
   one ``retired`` in one transaction. Daemons pick the change up at their next key refresh and
   keep signing with the old key until then, whose record is still published — no unsigned gap.
3. The old TXT record stays published for a week (mail in flight, delayed verification) and is
   then removed by the operator.
"""

from __future__ import annotations

import asyncpg

from engine.dkim import store
from engine.dkim.dnscheck import DnsCheck, TxtLookup, check_dns
from engine.errors import DkimKeyError, DkimKeyMissingError


async def promote(
    conn: asyncpg.Connection,
    tenant_id: str,
    domain: str,
    selector: str,
    *,
    lookup: TxtLookup | None = None,
    timeout: float = 3.0,
) -> tuple[DnsCheck, list[str]]:
    """Activate a pending key if its DNS record checks out: (check, selectors retired).

    Nothing changes unless the check is ``ok``; the check result says why otherwise.
    """
    record = await store.fetch_key(conn, tenant_id, domain, selector)
    if record is None:
        raise DkimKeyMissingError(
            f"tenant {tenant_id} has no stored DKIM key {selector}._domainkey.{domain}",
            hint="create it with: engine dkim keygen --tenant T --domain D --selector S",
        )
    if record.state == "retired":
        raise DkimKeyError(f"DKIM key {selector}._domainkey.{domain} is retired")
    check = await check_dns(
        record.domain, record.selector, record.public_txt, lookup=lookup, timeout=timeout
    )
    if not check.ok:
        return check, []
    retired = await store.activate(conn, tenant_id, record.domain, record.selector)
    return check, retired
