"""``python -m engine.dkim.worker``: one DKIM signer process, fed by the daemon over its pipes.

Frames both ways (:mod:`engine.workerpipe`: length, then body) carry msgpack. In: ``[key specs,
items]`` (a key spec is ``[PEM, domain, selector]``, an item ``[message, body hash | None,
timestamp | None, shared head | None]``; with the body hash given, the message is its header
block alone; with a shared head too, the message is the per-recipient fields and the header
block is those followed by the shared head, a block many messages have in common, parsed once
here). Out: first
one empty frame, once the worker is ready; then for each frame in, in order, one ``[fields | None,
error text | None]`` per item. The process ends at EOF on stdin (the daemon closing it); it ignores
SIGINT and SIGTERM, which are the daemon's to act on (it drains, then closes the pipes).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import BinaryIO

import msgspec

from engine.dkim.canon import SharedHead, is_field_block
from engine.dkim.sign import SigningKey, load_signing_key, sign, sign_shared
from engine.workerpipe import announce_ready, read_frame, write_frame

#: What a worker needs to rebuild a key: PEM (PKCS#8), domain, selector.
KeySpec = tuple[bytes, str, str]
#: One message: the message (or its per-recipient fields), its body hash (or None), the
#: timestamp (or None: now), the shared part of its header block (or None).
Item = tuple[bytes, bytes | None, int | None, bytes | None]
#: The DKIM-Signature field(s), or why not (text: the daemon raises it as a DkimError).
Fields = tuple[bytes | None, str | None]

#: Keys parsed in this process. Rotation retires keys, so the cache is only ever trimmed,
#: never needs invalidating.
_keys: dict[KeySpec, SigningKey] = {}
MAX_KEYS = 1024
#: Shared header blocks parsed in this process (a campaign's content-level fields), by value;
#: None for a block that cannot be parsed apart from its message's own fields.
_heads: dict[bytes, SharedHead | None] = {}
MAX_HEADS = 1024


def sign_fields(specs: Sequence[KeySpec], items: Sequence[Item]) -> list[Fields]:
    """The DKIM-Signature field(s) for each item, an error kept with its own item."""
    try:
        keys = [_key(spec) for spec in specs]
    except Exception as exc:
        return [(None, _text(exc))] * len(items)
    out: list[Fields] = []
    for item in items:
        message, body_hash, timestamp = item[0], item[1], item[2]
        # Three items come from a daemon started before shared heads (a worker respawned from
        # an upgraded install): signed as they were then.
        head = item[3] if len(item) > 3 else None
        try:
            shared = None if head is None or body_hash is None else _shared(head)
            if shared is not None and body_hash is not None and is_field_block(message):
                fields = sign_shared(
                    message, shared, keys, body_hash=body_hash, timestamp=timestamp
                )
            else:
                whole = message if head is None else message + head + b"\r\n"
                fields = sign(whole, keys, body_hash=body_hash, timestamp=timestamp)
            out.append((fields, None))
        except Exception as exc:
            out.append((None, _text(exc)))
    return out


def _key(spec: KeySpec) -> SigningKey:
    key = _keys.get(spec)
    if key is None:
        if len(_keys) >= MAX_KEYS:
            _keys.clear()
        # Trusted: the daemon loaded (and so checked) every key it sends.
        key = _keys[spec] = load_signing_key(
            spec[0], domain=spec[1], selector=spec[2], trusted=True
        )
    return key


def _shared(head: bytes) -> SharedHead | None:
    try:
        return _heads[head]
    except KeyError:
        pass
    if len(_heads) >= MAX_HEADS:
        _heads.clear()
    ok = is_field_block(head) and head[:1] not in (b" ", b"\t")
    # A block that does not parse raises here, and again (for this message) on the whole path.
    shared = _heads[head] = SharedHead(head) if ok else None
    return shared


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer frames from ``inp`` on ``out`` until EOF."""
    decode = msgspec.msgpack.Decoder().decode
    encode = msgspec.msgpack.Encoder().encode
    while (body := read_frame(inp)) is not None:
        raw_specs, items = decode(body)
        specs = [(bytes(p), str(d), str(s)) for p, d, s in raw_specs]
        write_frame(out, encode(sign_fields(specs, items)))


def main() -> int:
    announce_ready()
    serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
