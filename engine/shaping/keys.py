"""Where shaping state lives in Redis: one key layout, every key hash-tagged.

Keys of one tenant share the tag ``{t:<tenant>}`` so a Lua call covering a tenant's requests
touches one Redis Cluster slot (DESIGN §1); relay-node buckets are shared by every tenant and
carry their own tag ``{n:<node>}``. Sender addresses are lower-cased.
"""

from __future__ import annotations

from engine.shaping.model import sender_domain


def _tag_text(value: str) -> str:
    # Braces would end the hash tag early; % keeps the escaping reversible.
    return value.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class ShapingKeys:
    """Key builder for one engine prefix (``[redis] prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def tenant_tag(self, tenant_id: str) -> str:
        return f"{self.prefix}:shp:{{t:{_tag_text(tenant_id)}}}"

    def node_tag(self, node: str) -> str:
        return f"{self.prefix}:shp:{{n:{_tag_text(node)}}}"

    def tenant(self, tenant_id: str) -> str:
        return f"{self.tenant_tag(tenant_id)}:t"

    def sender_domain(self, tenant_id: str, sender: str) -> str:
        return f"{self.tenant_tag(tenant_id)}:d:{sender_domain(sender)}"

    def sender(self, tenant_id: str, sender: str) -> str:
        return f"{self.tenant_tag(tenant_id)}:s:{sender.lower()}"

    def provider(self, tenant_id: str, sender: str, provider: str) -> str:
        """GCRA TAT of sender x provider."""
        return f"{self.tenant_tag(tenant_id)}:p:{sender.lower()}|{provider}"

    def rate(self, tenant_id: str, sender: str, provider: str) -> str:
        """AIMD hash of sender x provider: rate (msg/s), dec (ms of the last decrease)."""
        return f"{self.tenant_tag(tenant_id)}:r:{sender.lower()}|{provider}"

    def warmup(self, tenant_id: str, sender: str) -> str:
        """Warm-up hash of a sender: stage, day (UTC days since epoch), cap (-1: graduated)."""
        return f"{self.tenant_tag(tenant_id)}:w:{sender.lower()}"

    def daily(self, tenant_id: str, sender: str, provider: str) -> str:
        """Warm-up daily counter of sender x provider: day, n."""
        return f"{self.tenant_tag(tenant_id)}:c:{sender.lower()}|{provider}"

    def pause(self, tenant_id: str, sender: str) -> str:
        """Present while the sender is paused; the value is the JSON :class:`PauseVerdict`."""
        return f"{self.tenant_tag(tenant_id)}:pause:{sender.lower()}"

    def reputation(self, tenant_id: str, sender: str) -> str:
        """Window counters of a sender: fields ``<bucket>:a|h|c``."""
        return f"{self.tenant_tag(tenant_id)}:rep:{sender.lower()}"

    def node(self, node: str) -> str:
        return f"{self.node_tag(node)}:n"
