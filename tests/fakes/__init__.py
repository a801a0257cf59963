"""Fakes of the servers the engine talks to, shared by integration and chaos tests."""

from tests.fakes.mailu import FakeMailU, ReceivedMessage

__all__ = ["FakeMailU", "ReceivedMessage"]
