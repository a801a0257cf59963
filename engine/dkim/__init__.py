"""DKIM: sans-IO canonicalisation and signing (``canon``, ``sign``); keys, storage, DNS at the edge.

Hot-path API::

    from engine.dkim import body_hash, sign_message
    bh = body_hash(shared_body)                      # once per campaign body
    signed = sign_message(msg, ring.keys_for(domain), body_hash=bh)

``sign()`` (the DKIM-Signature fields alone) lives in :mod:`engine.dkim.sign`; it is not
re-exported here, where the name would hide the submodule of the same name.
"""

from engine.dkim.canon import body_hash, message_body_hash
from engine.dkim.sign import SigningKey, load_signing_key, sign_message

__all__ = [
    "SigningKey",
    "body_hash",
    "load_signing_key",
    "message_body_hash",
    "sign_message",
]
