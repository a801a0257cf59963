"""SMTP vocabulary shared by the relay, inbound and shaping layers (sans-IO, no engine imports).

:mod:`~engine.smtp.codes`: reply codes and their classes (RFC 5321 §4.2), enhanced status codes
(RFC 3463) and the one parser for them.
"""

from engine.smtp.codes import (
    EnhancedClass,
    EnhancedSubject,
    ReplyClass,
    ReplyCode,
    parse_enhanced_status,
)

__all__ = ["EnhancedClass", "EnhancedSubject", "ReplyClass", "ReplyCode", "parse_enhanced_status"]
