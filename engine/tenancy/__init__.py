"""Tenant isolation services: which sending domains a tenant owns (docs/security.md)."""
