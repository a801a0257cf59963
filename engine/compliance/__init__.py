"""Sender compliance: SPF, DKIM, DMARC and reverse DNS of sender domains; tenant relay pools,
IP warm-up and daily quotas (docs/compliance.md)."""
