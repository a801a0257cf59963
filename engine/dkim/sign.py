"""DKIM signing (RFC 6376, RFC 8463), sans-IO: dkimpy's canonical forms, OpenSSL's maths.

Stock dkimpy does RSA in pure Python (``python -m bench dkim`` measures the ratio); here the
private-key operation goes to ``cryptography`` (OpenSSL), which also releases the GIL, so
:func:`sign` can run in several threads at once. Parsing, canonicalisation and header
selection follow dkimpy byte for byte (:mod:`engine.dkim.canon`), so every signature verifies
with ``dkim.verify``.

Typical campaign use: ``bh = body_hash(body)`` once, then ``sign(message, keys, body_hash=bh)``
per recipient. Keys come from :func:`load_signing_key` (or :class:`engine.dkim.keys.KeyRing`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from collections.abc import Sequence
from typing import Literal

import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from engine.dkim import canon
from engine.dkim.canon import body_hash
from engine.errors import DkimKeyError, DkimMessageError

__all__ = [
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "Algorithm",
    "SigningKey",
    "body_hash",
    "dkim_selectors",
    "load_signing_key",
    "public_txt_record",
    "sign",
    "sign_message",
    "sign_shared",
]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

MIN_RSA_BITS = 1024  # RFC 8301: verifiers must not accept less
MAX_RSA_BITS = 4096  # larger keys do not fit a TXT record comfortably and sign slowly

_SIG_NAME = b"DKIM-Signature"
# Immutable parameter objects, made once rather than for every signature.
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
_BH_LEN = 44  # base64 of a SHA-256 digest
_FOLD_WIDTH = 76  # keeps every line of the header under RFC 5322's recommended 78 characters
# Labels of a domain or selector as they may appear in d= and s=: letters, digits, '-' and '_'.
# Anything else (';', '=', spaces, CR/LF) would let a name inject tags into the signature.
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)


class SigningKey(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded private key and everything needed to sign with it (build with load_signing_key).

    Immutable and thread-safe: cryptography creates a fresh OpenSSL context per signature.
    """

    domain: str
    selector: str
    algorithm: Algorithm
    bits: int
    private_key: PrivateKey
    public_txt: str  # the value of the TXT record at ``selector._domainkey.domain``
    tags: bytes  # the constant leading tags (folded) of every signature made with this key

    @property
    def dns_name(self) -> str:
        """Where the public key must be published."""
        return f"{self.selector}._domainkey.{self.domain}"

    def __repr__(self) -> str:
        # Never let a private key object near a log line, even by accident.
        return f"SigningKey({self.algorithm} {self.bits} bits, {self.dns_name})"


def _dns_label_text(value: str, what: str) -> str:
    """Lower-case ASCII form of a domain or selector, or DkimKeyError naming the problem."""
    text = value.strip().rstrip(".").lower()
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise DkimKeyError(f"DKIM {what} {value!r} is not a valid domain name") from None
    if not _DNS_NAME.match(text):
        raise DkimKeyError(
            f"DKIM {what} {value!r} is not a valid DNS name",
            hint="use letters, digits, '-', '_' and dots only",
        )
    return text


def public_txt_record(private_key: PrivateKey) -> str:
    """The DNS TXT record value publishing the public half of ``private_key``."""
    public = private_key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def _load_pem(pem: bytes, *, trusted: bool = False) -> object:
    if b"-----BEGIN" not in pem:
        raise DkimKeyError(
            "DKIM private key is not PEM (no '-----BEGIN' line)",
            hint="use the file written by 'engine dkim keygen' or 'openssl genpkey'",
        )
    try:
        return serialization.load_pem_private_key(
            pem, password=None, unsafe_skip_rsa_key_validation=trusted
        )
    except TypeError:
        raise DkimKeyError(
            "DKIM private key is encrypted with a passphrase",
            hint="store it unencrypted, mode 0600",
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DkimKeyError(f"DKIM private key PEM cannot be parsed: {exc}") from None


def load_signing_key(
    pem: bytes, *, domain: str, selector: str, trusted: bool = False
) -> SigningKey:
    """Load a PEM private key (PKCS#8 or PKCS#1) for signing as ``d=domain; s=selector``.

    The algorithm follows the key: RSA keys (1024–4096 bits) sign ``rsa-sha256``, Ed25519 keys
    sign ``ed25519-sha256``. Raises :class:`DkimKeyError` for anything else.

    ``trusted``: these exact bytes passed this function's full check before, in this engine
    (a sealed row of the key store, whose authenticated encryption proves it is the PEM that
    was checked when stored; a key the daemon hands its signer processes). OpenSSL's RSA
    consistency check (primality of p and q) is then skipped: it costs thousands of times the
    parse itself, and the stored keys are loaded again at every refresh.
    """
    domain = _dns_label_text(domain, "domain")
    selector = _dns_label_text(selector, "selector")
    key = _load_pem(pem, trusted=trusted)
    algorithm: Algorithm
    if isinstance(key, rsa.RSAPrivateKey):
        bits = key.key_size
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise DkimKeyError(
                f"DKIM RSA key for {selector}._domainkey.{domain} has {bits} bits; "
                f"{MIN_RSA_BITS}–{MAX_RSA_BITS} are supported",
                hint="generate a 2048-bit key with 'engine dkim keygen'",
            )
        algorithm = "rsa-sha256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        bits = 256
        algorithm = "ed25519-sha256"
    else:
        raise DkimKeyError(
            f"DKIM key for {selector}._domainkey.{domain} is of type {type(key).__name__}; "
            "only RSA and Ed25519 keys can sign DKIM"
        )
    # Pre-rendered once per key: the leading tags never change between signatures.
    tags = f" v=1; a={algorithm}; c=relaxed/relaxed;\r\n d={domain}; s={selector};".encode()
    return SigningKey(
        domain=domain,
        selector=selector,
        algorithm=algorithm,
        bits=bits,
        private_key=key,
        public_txt=public_txt_record(key),
        tags=tags,
    )


def _fold_list(prefix: bytes, items: Sequence[bytes], sep: bytes) -> bytes:
    """``prefix`` + items joined by ``sep``, breaking lines (CRLF + space) before the width."""
    lines: list[bytes] = []
    line = b" " + prefix
    for i, item in enumerate(items):
        piece = item + (sep if i < len(items) - 1 else b"")
        if len(line) + len(piece) > _FOLD_WIDTH and line.strip():
            lines.append(line)
            line = b" "
        line += piece
    lines.append(line)
    return b"\r\n".join(lines)


@functools.lru_cache(maxsize=256)
def _h_tag(names: tuple[bytes, ...]) -> bytes:
    """The folded h= tag; cached, as nearly every message of a sender has the same field set."""
    return _fold_list(b"h=", names, b":") + b";"


@functools.lru_cache(maxsize=1024)
def _relaxed_start(tags: bytes) -> bytes:
    """``dkim-signature:`` and a key's constant tags, in relaxed form."""
    return b"dkim-signature:" + tags.replace(b"\r\n", b"").strip()


@functools.lru_cache(maxsize=256)
def _relaxed_h(names: tuple[bytes, ...]) -> bytes:
    """The h= tag in relaxed form."""
    return _h_tag(names).replace(b"\r\n", b"")


def _fold_base64(b64: bytes) -> bytes:
    """The b= tag, its value cut into lines; verifiers drop the whitespace (RFC 6376 §3.5)."""
    first = _FOLD_WIDTH - 3  # " b=" on the first line
    chunks = [b64[:first]] + [
        b64[i : i + _FOLD_WIDTH - 1] for i in range(first, len(b64), _FOLD_WIDTH - 1)
    ]
    return b" b=" + b"\r\n ".join(c for c in chunks if c)


def _signature_value(
    key: SigningKey, names: Sequence[bytes], bh: bytes, timestamp: int, headers_data: bytes
) -> bytes:
    """The folded DKIM-Signature value (after the colon) for one key, b= filled in."""
    t_tag = b" t=%d;" % timestamp
    names = tuple(names)
    h_tag = _h_tag(names)
    bh_tag = b" bh=" + bh + b";"
    head = b"\r\n".join((key.tags, t_tag, h_tag, bh_tag))
    # canon.canonical_unsigned_field(_SIG_NAME, head + b"\r\n b=") from pieces made once
    # per key and per h= list: every piece is ours, without tabs or runs of spaces, so relaxed
    # form is only the line breaks taken out (every signature of the DKIM tests is verified by
    # dkimpy, which hashes the field its own way).
    data = b"".join(
        (headers_data, _relaxed_start(key.tags), t_tag, _relaxed_h(names), bh_tag, b" b=")
    )
    pk = key.private_key
    if isinstance(pk, rsa.RSAPrivateKey):
        signature = pk.sign(data, _PKCS1, _SHA256)
    else:
        # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the header data, not the data itself.
        signature = pk.sign(hashlib.sha256(data).digest())
    return head + b"\r\n" + _fold_base64(base64.b64encode(signature))


def sign(
    message: bytes,
    keys: Sequence[SigningKey],
    *,
    body_hash: bytes | None = None,
    timestamp: int | None = None,
) -> bytes:
    """DKIM-Signature field(s) for ``message``, one per key, folded and CRLF-terminated.

    Prepend the result to the message (see :func:`sign_message`). ``message`` may use LF or CRLF
    line endings. ``body_hash`` is the base64 value from :func:`body_hash` for this message's
    body; pass it to skip re-hashing a body shared by many messages — it MUST be the hash of
    this very body, or every receiver will see a body-hash failure. ``timestamp`` is the t= tag
    (default: now). Safe to call from several threads at once.
    """
    if not keys:
        raise DkimMessageError("sign() needs at least one key")
    block, offset = canon.split_message(message)
    headers = canon.parse_headers(block)
    names = canon.signed_header_names(headers)
    headers_data = canon.canonical_signed_headers(headers, names)
    bh = canon.body_hash(message[offset:]) if body_hash is None else _checked_body_hash(body_hash)
    return _fields(keys, names, bh, timestamp, headers_data)


def sign_shared(
    prefix: bytes,
    shared: canon.SharedHead,
    keys: Sequence[SigningKey],
    *,
    body_hash: bytes,
    timestamp: int | None = None,
) -> bytes:
    """:func:`sign` for a message whose header block is ``prefix`` followed by a block shared
    by many messages, parsed once into ``shared`` (:class:`~engine.dkim.canon.SharedHead`):
    only ``prefix`` (the per-recipient fields) is parsed here. ``prefix`` must pass
    :func:`~engine.dkim.canon.is_field_block`."""
    if not keys:
        raise DkimMessageError("sign() needs at least one key")
    names, headers_data = canon.header_data(prefix, shared)
    return _fields(keys, names, _checked_body_hash(body_hash), timestamp, headers_data)


def _checked_body_hash(body_hash: bytes) -> bytes:
    if len(body_hash) != _BH_LEN:
        # A raw digest or a hex string here would sign garbage that every receiver rejects.
        raise DkimMessageError(
            f"body_hash must be the {_BH_LEN}-character base64 value from body_hash(), "
            f"got {len(body_hash)} bytes"
        )
    return body_hash


def _fields(
    keys: Sequence[SigningKey],
    names: Sequence[bytes],
    bh: bytes,
    timestamp: int | None,
    headers_data: bytes,
) -> bytes:
    t = int(time.time()) if timestamp is None else timestamp
    return b"".join(
        _SIG_NAME + b":" + _signature_value(key, names, bh, t, headers_data) + b"\r\n"
        for key in keys
    )


def sign_message(
    message: bytes,
    keys: Sequence[SigningKey],
    *,
    body_hash: bytes | None = None,
    timestamp: int | None = None,
) -> bytes:
    """``message`` with its DKIM-Signature field(s) prepended (see :func:`sign`).

    The new fields use the message's own line ending (LF or CRLF) so the result is consistent.
    """
    return prepend_fields(sign(message, keys, body_hash=body_hash, timestamp=timestamp), message)


def prepend_fields(fields: bytes, message: bytes) -> bytes:
    """``message`` with the DKIM-Signature ``fields`` (as :func:`sign` made them) in front, in
    the message's own line ending (LF or CRLF)."""
    first_eol = message.find(b"\n")
    if first_eol > 0 and message[first_eol - 1 : first_eol] != b"\r":
        fields = fields.replace(b"\r\n", b"\n")
    return fields + message


_LEADING_SIG = re.compile(rb"DKIM-Signature:((?:[^\n]*\n[ \t])*[^\n]*)\n", re.IGNORECASE)
_S_TAG = re.compile(rb"(?:^|;)\s*s\s*=\s*([A-Za-z0-9._-]+)")


def dkim_selectors(message: bytes) -> str | None:
    """The s= selector(s) of the DKIM-Signature fields at the head of a signed ``message``
    (comma-separated, in order), or None when it starts with none. Reads only those fields."""
    found: list[str] = []
    pos = 0
    while len(found) < 8:
        m = _LEADING_SIG.match(message, pos)
        if m is None:
            break
        tag = _S_TAG.search(m.group(1))
        if tag is not None:
            found.append(tag.group(1).decode("ascii"))
        pos = m.end()
    return ",".join(found) or None
