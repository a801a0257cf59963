"""GDPR / CAN-SPAM: erasure of a recipient across the tiers, pseudonymised suppressions
(docs/compliance.md). Retention purges live in engine/retention.py, the audit log in
engine/audit.py."""
