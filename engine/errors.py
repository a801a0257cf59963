"""One exception tree for the whole engine.

Every error an operator can see derives from :class:`EngineError` and carries a message that says
what was wrong and what to do about it. ``exit_code`` is what the CLI exits with when the error
escapes a command (DESIGN §8: 1 runtime error, 2 usage/config error).
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class UsageError(EngineError):
    """The command line was wrong."""

    exit_code = 2


class ConfigError(EngineError):
    """The configuration file or an ENGINE_* override is invalid."""

    exit_code = 2


class JobValidationError(EngineError):
    """A job was refused at enqueue; nothing of it was stored."""


class StoreError(EngineError):
    """PostgreSQL could not be reached or refused a statement."""


class MigrationError(StoreError):
    """A schema migration failed; the database is left at the last good version."""


class QueueError(EngineError):
    """Redis could not be reached or refused a command."""


class ComposeError(EngineError):
    """A message could not be built from a job's content."""


class CampaignError(EngineError):
    """A campaign request names an unknown tenant or campaign, or an unusable campaign id."""


class TemplateError(ComposeError):
    """A campaign template cannot be compiled, or a job's variables cannot be rendered into it."""


class DkimError(EngineError):
    """DKIM key or signing problem; the affected sender is held, never sent unsigned silently."""


class DkimKeyMissingError(DkimError):
    """No usable DKIM key for a sender domain while ``[dkim] required = true``."""


class RelayError(EngineError):
    """Talking to a MailU relay node failed."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class ShapingError(EngineError):
    """A shaping limit or policy could not be evaluated."""


class DkimKeyError(DkimError):
    """A DKIM private key could not be loaded: bad PEM, unsupported type or size, bad name."""


class DkimMessageError(DkimError):
    """A message cannot be DKIM-signed as it stands (no From, bare CR/NUL in a header...)."""


class DkimCryptoError(DkimError):
    """The DKIM master key is missing/invalid, or a stored private key failed to decrypt."""


class DnsLookupError(EngineError):
    """DNS itself failed (timeout, SERVFAIL, no server answered); not an answer about the name.

    Raised by the one DNS adapter, :mod:`engine.resolver`; each caller decides what a failed
    lookup means for it (a check reports ``error``, a provider lookup falls back).
    """


class DkimDnsError(DkimError, DnsLookupError):
    """The published DKIM TXT record is missing, does not match the key, or DNS failed."""


class AdminRequestError(EngineError):
    """An admin API request was refused (bad input, unknown id, conflict); ``status`` is HTTP."""

    def __init__(self, message: str, *, status: int = 400, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class ComplianceError(EngineError):
    """A sender domain's compliance check could not run or its result could not be applied."""


class ComplianceDnsError(ComplianceError, DnsLookupError):
    """DNS itself failed during a compliance check (timeout, SERVFAIL); not a verdict."""


class GdprError(EngineError):
    """A GDPR erasure could not be completed; nothing partial was committed."""


class RetentionError(EngineError):
    """A retention purge failed; rows already deleted stay deleted, the rest wait for next run."""


class EventError(EngineError):
    """An event could not be recorded or published (unknown kind, bad stream config)."""


class WebhookError(EngineError):
    """A webhook endpoint was refused (URL not allow-listed, bad scheme) or is unknown."""


class DomainError(EngineError):
    """A sending-domain request was refused (unknown, not verifiable, owned by another tenant)."""


class ApiKeyError(EngineError):
    """An API key operation was refused: unknown tenant or key, bad scope or prefix."""

    def __init__(self, message: str, *, status: int = 400, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
