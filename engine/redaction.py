"""One redaction for every secret-bearing URL or DSN form, applied to any text.

Error messages and log lines may quote a connection string, or an exception that quotes one.
:func:`redact` masks, wherever they appear in the text:

* URL userinfo passwords of any scheme: ``postgresql://u:pw@h/db``, ``redis://:pw@h``,
  ``rediss://user:pw@h``, ``redis+sentinel://:pw@h:26379``, ``amqp://u:pw@h`` (the password may
  itself contain ``@``: everything up to the last ``@`` of the authority is masked);
* password-like parameters in query strings and key=value DSNs: ``?password=``,
  ``&sslpassword=``, libpq's ``password=x host=y`` and ``password='a b'``, and ``token``,
  ``secret``, ``api_key``-style parameters;
* tenant API keys (``pm_live_<prefix>_<secret>``): the prefix stays, the secret does not.

It is the one function for this: ``engine.store.pool``, the Redis errors, the CLI's error line,
the admin API's error bodies and the JSON log formatter all call it.
"""

from __future__ import annotations

import re

MASK = "***"

_USERINFO = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s?#]*):(?P<pw>[^\s/?#]*)@", re.IGNORECASE
)
_PARAM = re.compile(
    r"(?P<head>(?<![\w.-])(?:ssl)?(?:password|passwd|pwd|secret|token|api_?key|auth_?token)"
    r"\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&#;'\"]+)",
    re.IGNORECASE,
)
_API_KEY = re.compile(r"\b(pm_live_[0-9a-f]{12})_[A-Za-z0-9_-]+")


def redact(text: str) -> str:
    """``text`` with every password, secret parameter and API key secret replaced by ``***``."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _PARAM.sub(lambda m: f"{m['head']}{MASK}", text)
    return _API_KEY.sub(lambda m: f"{m[1]}_{MASK}", text)
