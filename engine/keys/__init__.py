"""Per-tenant API keys for the admin side-port: format, storage, scopes, rate limits.

``token`` is the sans-IO core (the key format, its hash, which scope may do what), ``store`` the
SQL, ``service`` what the CLI (``engine keys``) and the admin routes (``/v1/keys``) both call,
``ratelimit`` the per-key enqueue GCRA bucket shared through Redis. docs/security.md, "API keys
and scopes", is the operator's and the platform developer's view.
"""
