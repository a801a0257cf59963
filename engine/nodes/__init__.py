"""The relay tier seen from the operator's side: checking MailU nodes, rendering their overrides.

``check`` (``engine nodes check``, ``GET /v1/nodes/check``) opens sessions the way the daemon does
and dry-runs the transactions the engine needs; ``overrides`` (``engine mailu overrides``)
renders the Postfix settings that make a MailU node pace each provider. docs/mailu.md.
"""
