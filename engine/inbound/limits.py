"""What the inbound listener lets one client, and all clients together, do (sans-IO).

Checked in SMTP order: at connect (a global cap on open connections, then per IP), at MAIL (per
IP: messages in the last minute, messages and bytes in the last hour, the declared SIZE) and at
DATA (per IP: bytes in the last hour with this message). Every refusal is a :class:`Refusal`
whose reply is a 421: the sender retries later, nothing is lost.

The hourly counts are a sliding-window estimate (this hour's count plus the previous hour's,
weighted by how much of it still lies in the last 3,600 s): two counters per IP instead of one
timestamp per message. The per-IP table is an LRU: an IP idle for two hours has no counts left
and is forgotten, and at most ``max_tracked`` IPs are kept (the longest idle go first), so many
distinct IPs cannot grow it without bound.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable

import msgspec

HOUR_S = 3600.0
MINUTE_S = 60.0


class Refusal(msgspec.Struct, frozen=True):
    """Why a client is turned away: a fixed ``cause`` (a metric label) and the SMTP reply."""

    cause: str  # connections | ip_connections | ip_rate_minute | ip_messages_hour | ip_bytes_hour
    reply: str


CONNECTIONS = Refusal("connections", "421 4.7.0 Too many connections, try again later")
IP_CONNECTIONS = Refusal("ip_connections", "421 4.7.0 Too many connections from your address")
IP_RATE_MINUTE = Refusal(
    "ip_rate_minute", "421 4.7.0 Too many messages from your address, slow down"
)
IP_MESSAGES_HOUR = Refusal(
    "ip_messages_hour",
    "421 4.7.0 Hourly message quota of your address reached, try again later",
)
IP_BYTES_HOUR = Refusal(
    "ip_bytes_hour", "421 4.7.0 Hourly byte quota of your address reached, try again later"
)


class _Peer:
    """Counters of one client IP."""

    __slots__ = ("hour", "hour_bytes", "hour_msgs", "minute", "prev_bytes", "prev_msgs", "seen")

    def __init__(self, now: float) -> None:
        self.minute: deque[float] = deque()
        self.hour = int(now // HOUR_S)
        self.hour_msgs = 0
        self.hour_bytes = 0
        self.prev_msgs = 0
        self.prev_bytes = 0
        self.seen = now

    def roll(self, now: float) -> float:
        """Move to the hour of ``now``; returns the weight of the previous hour's counts."""
        hour = int(now // HOUR_S)
        if hour != self.hour:
            if hour == self.hour + 1:
                self.prev_msgs, self.prev_bytes = self.hour_msgs, self.hour_bytes
            else:
                self.prev_msgs = self.prev_bytes = 0
            self.hour_msgs = self.hour_bytes = 0
            self.hour = hour
        return 1.0 - (now - hour * HOUR_S) / HOUR_S

    def messages(self, now: float) -> float:
        weight = self.roll(now)
        return self.prev_msgs * weight + self.hour_msgs

    def bytes(self, now: float) -> float:
        weight = self.roll(now)
        return self.prev_bytes * weight + self.hour_bytes


#: An IPv6 client is counted by its /64: one host is routinely given a whole /64, and an
#: address per connection from it would otherwise get fresh quotas every time.
IPV6_PREFIX = 64


@functools.lru_cache(maxsize=4096)
def peer_key(ip: str) -> str:
    """What the limits count ``ip`` as: itself (IPv4, mapped IPv4 too), its /64 (IPv6)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an IP (a unix socket peer, "?"): as it is
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, IPV6_PREFIX), strict=False))
    return ip


class PeerLimits:
    """Open connections (global and per IP), messages per minute, messages and bytes per hour."""

    def __init__(
        self,
        max_connections: int,
        max_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_total_connections: int = 200,
        max_messages_per_hour: int = 10_000,
        max_bytes_per_hour: int = 1 << 30,
        max_tracked: int = 100_000,
    ) -> None:
        self.max_connections = max_connections  # per IP
        self.max_per_minute = max_per_minute
        self.max_total_connections = max_total_connections
        self.max_messages_per_hour = max_messages_per_hour
        self.max_bytes_per_hour = max_bytes_per_hour
        self.max_tracked = max_tracked
        self.clock = clock
        self.open: dict[str, int] = {}
        self.total = 0
        self._peers: OrderedDict[str, _Peer] = OrderedDict()

    def __len__(self) -> int:
        """IPs whose counters are kept (for tests and diagnostics)."""
        return len(self._peers)

    def connect(self, ip: str) -> Refusal | None:
        """A new connection from ``ip``: counted unless refused (then not counted)."""
        ip = peer_key(ip)
        if self.total >= self.max_total_connections:
            return CONNECTIONS
        if self.open.get(ip, 0) >= self.max_connections:
            return IP_CONNECTIONS
        self.open[ip] = self.open.get(ip, 0) + 1
        self.total += 1
        return None

    def disconnect(self, ip: str) -> None:
        """A connection counted by :meth:`connect` ended."""
        ip = peer_key(ip)
        left = self.open.get(ip, 0) - 1
        if left <= 0:
            self.open.pop(ip, None)
        else:
            self.open[ip] = left
        self.total = max(0, self.total - 1)

    def message(self, ip: str, size: int | None = None) -> Refusal | None:
        """MAIL from ``ip`` (``size``: its declared SIZE, if any); counted unless refused."""
        now = self.clock()
        peer = self._peer(ip, now)
        q = peer.minute
        while q and q[0] <= now - MINUTE_S:
            q.popleft()
        if len(q) >= self.max_per_minute:
            return IP_RATE_MINUTE
        if peer.messages(now) >= self.max_messages_per_hour:
            return IP_MESSAGES_HOUR
        used = peer.bytes(now)
        if used >= self.max_bytes_per_hour or used + (size or 0) > self.max_bytes_per_hour:
            return IP_BYTES_HOUR
        q.append(now)
        peer.hour_msgs += 1
        return None

    def data(self, ip: str, size: int) -> Refusal | None:
        """A message of ``size`` bytes from ``ip`` at DATA: counted unless it breaks the quota."""
        now = self.clock()
        peer = self._peer(ip, now)
        if peer.bytes(now) + size > self.max_bytes_per_hour:
            return IP_BYTES_HOUR
        peer.hour_bytes += size
        return None

    def _peer(self, ip: str, now: float) -> _Peer:
        ip = peer_key(ip)
        peers = self._peers
        peer = peers.get(ip)
        if peer is None:
            peer = peers[ip] = _Peer(now)
        else:
            peers.move_to_end(ip)
            peer.seen = now
        self._prune(now)
        return peer

    def _prune(self, now: float) -> None:
        # The least recently seen come first: stop at the first one still within two hours.
        peers = self._peers
        while peers:
            ip, oldest = next(iter(peers.items()))
            if now - oldest.seen <= 2 * HOUR_S and len(peers) <= self.max_tracked:
                break
            del peers[ip]
