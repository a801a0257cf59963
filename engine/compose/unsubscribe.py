"""List headers Gmail and Yahoo require of bulk senders: List-Unsubscribe (RFC 2369), one-click
List-Unsubscribe-Post (RFC 8058) and Feedback-ID (Gmail's feedback loop), and the engine's own
per-job unsubscribe addresses and tokens.

A bulk job (one with a campaign) whose content brings no List-Unsubscribe gets one per recipient:
``mailto:u-<job>-<tag>@<verp_domain>`` (the inbound listener accepts it) and, when
``[inbound] unsubscribe_url`` is set, ``<unsubscribe_url>/u-<job>-<tag>`` with
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The tag is the same truncated HMAC as VERP
(prefix ``u``), so only the engine can mint a token and nobody can unsubscribe someone else.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlsplit

from engine.compose import verp_keys
from engine.config import InboundConfig
from engine.errors import ComposeError

# A URI inside <...> may not contain white space, angle brackets or controls (RFC 2369 §2);
# commas would split it into two URIs. Anything else must be percent-encoded by the platform.
_URI_SAFE = re.compile(r'[^\x00-\x20"<>,\\^`{|}\x7f]+')
_FEEDBACK_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")
ONE_CLICK = ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")


def _check_uri(kind: str, uri: str) -> str:
    if not uri.isascii() or not _URI_SAFE.fullmatch(uri):
        raise ComposeError(
            f"list-unsubscribe {kind} {uri!r} must be ASCII without spaces, commas, quotes or "
            "angle brackets (percent-encode them)"
        )
    return uri


def _check_https(url: str) -> str:
    """The URL when it parses with a host and a valid port (``https://[::1/`` does not)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ComposeError(f"list-unsubscribe URL {url[:80]!r} cannot be parsed: {exc}") from None
    if not parts.hostname:
        raise ComposeError(f"list-unsubscribe URL {url[:80]!r} has no host")
    return url


def list_unsubscribe_headers(https_url: str | None, mailto: str | None) -> list[tuple[str, str]]:
    """Return the List-Unsubscribe header (and List-Unsubscribe-Post when there is an https URL).

    ``mailto`` may be a bare address or a ``mailto:`` URI (with ``?subject=`` etc.). RFC 8058
    one-click requires an https URI, so List-Unsubscribe-Post is only added with one. Returns
    ``[]`` when both are None.
    """
    uris: list[str] = []
    if mailto:
        uri = mailto if mailto.lower().startswith("mailto:") else f"mailto:{mailto}"
        uris.append(_check_uri("mailto", uri))
    if https_url:
        if not https_url.lower().startswith("https://"):
            raise ComposeError(
                f"list-unsubscribe URL {https_url!r} must be https (RFC 8058 one-click)"
            )
        uris.append(_check_uri("URL", _check_https(https_url)))
    if not uris:
        return []
    headers = [("List-Unsubscribe", ", ".join(f"<{u}>" for u in uris))]
    if https_url:
        headers.append(ONE_CLICK)
    return headers


def split_list_unsubscribe(value: str) -> tuple[str | None, str | None]:
    """Split a job's ``list_unsubscribe`` field into (https URL, mailto).

    The field holds an https URL, a ``mailto:`` URI, or both separated by a comma (angle brackets
    allowed, as in the header itself).
    """
    https_url: str | None = None
    mailto: str | None = None
    for raw in value.split(","):
        item = raw.strip().removeprefix("<").removesuffix(">").strip()
        if not item:
            continue
        lowered = item.lower()
        if lowered.startswith("https://") and https_url is None:
            https_url = item
        elif lowered.startswith("mailto:") and mailto is None:
            mailto = item
        else:
            raise ComposeError(
                f"list_unsubscribe item {item!r} must be one https:// URL and/or one mailto: URI"
            )
    if https_url is None and mailto is None:
        raise ComposeError("list_unsubscribe is empty")
    return https_url, mailto


def feedback_id(campaign: str, tenant: str, sender: str) -> str:
    """Gmail Feedback-ID value ``campaign:tenant:sender:pm``.

    Colons separate the fields, so they (and any character unsafe in a header, non-ASCII included)
    become ``_`` inside a field; each field is cut to 64 characters. Empty fields become ``-``.
    """

    def clean(value: str) -> str:
        return _FEEDBACK_UNSAFE.sub("_", value)[:64] or "-"

    return f"{clean(campaign)}:{clean(tenant)}:{clean(sender)}:pm"


PREFIX = "u"


def token(job_id: int, cfg: InboundConfig) -> str:
    """The per-job token (the local part of the unsubscribe address), current secret."""
    return verp_keys.encode(job_id, cfg, local_prefix=PREFIX).rpartition("@")[0]


def job_of(address_or_token: str, cfg: InboundConfig, now: datetime | None = None) -> int | None:
    """The job an unsubscribe address or token belongs to; None when forged or not ours.

    Tokens signed with a previous secret ([[inbound.verp_previous]]) count until its window ends.
    """
    value = address_or_token if "@" in address_or_token else f"{address_or_token}@{cfg.verp_domain}"
    return verp_keys.decode(value, cfg, local_prefix=PREFIX, now=now)


def headers(job_id: int, cfg: InboundConfig) -> list[tuple[str, str]]:
    """List-Unsubscribe (+ List-Unsubscribe-Post when one-click is configured) for one job."""
    tok = token(job_id, cfg)
    https = f"{cfg.unsubscribe_url.rstrip('/')}/{tok}" if cfg.unsubscribe_url else None
    return list_unsubscribe_headers(https, f"{tok}@{cfg.verp_domain}")
