"""``python -m engine.dkim.worker``: one DKIM signer process, fed by the daemon over its pipes.

Frames both ways (:mod:`engine.workerpipe`: length, then body) carry msgpack. In: ``[key specs,
items]`` (a key spec is ``[PEM, domain, selector]``, an item ``[message, body hash | None,
timestamp | None]``; with the body hash given, the message is its header block alone). Out: first
one empty frame, once the worker is ready; then for each frame in, in order, one ``[fields | None,
error text | None]`` per item. The process ends at EOF on stdin (the daemon closing it); it ignores
SIGINT and SIGTERM, which are the daemon's to act on (it drains, then closes the pipes).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import BinaryIO

import msgspec

from engine.dkim.sign import SigningKey, load_signing_key, sign
from engine.workerpipe import announce_ready, read_frame, write_frame

#: What a worker needs to rebuild a key: PEM (PKCS#8), domain, selector.
KeySpec = tuple[bytes, str, str]
#: One message: the message, its body hash (or None), the timestamp (or None: now).
Item = tuple[bytes, bytes | None, int | None]
#: The DKIM-Signature field(s), or why not (text: the daemon raises it as a DkimError).
Fields = tuple[bytes | None, str | None]

#: Keys parsed in this process. Rotation retires keys, so the cache is only ever trimmed,
#: never needs invalidating.
_keys: dict[KeySpec, SigningKey] = {}
MAX_KEYS = 1024


def sign_fields(specs: Sequence[KeySpec], items: Sequence[Item]) -> list[Fields]:
    """The DKIM-Signature field(s) for each item, an error kept with its own item."""
    try:
        keys = [_key(spec) for spec in specs]
    except Exception as exc:
        return [(None, _text(exc))] * len(items)
    out: list[Fields] = []
    for message, body_hash, timestamp in items:
        try:
            out.append((sign(message, keys, body_hash=body_hash, timestamp=timestamp), None))
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
