"""The project's error hierarchy.

    VoiceError                      base of everything we raise on purpose
    +-- DecodeError                 bytes on the bus that are not a valid message
    +-- ConfigError                 bad settings or a missing model file
    |   +-- ModelFileError          a model part is missing or its SHA-256 does not match
    +-- BusError                    NATS unavailable or a request failed
    |   +-- OverloadedError         no replica of a service has room for a new call
    |   +-- UnknownModelError       no replica of a service serves a requested model
    |   +-- StateConflictError      a compare-and-set write to session state lost a race
    +-- EngineError                 an engine backend failed; ``retryable`` says if a retry may help
    +-- ProtocolError               a client sent something its protocol does not allow;
                                    ``code`` is what the peer is told

Peers only ever see ``code`` and a short message, never ``repr(exc)``.
"""

from __future__ import annotations


class VoiceError(Exception):
    """Base class of every deliberate error in this project."""


class DecodeError(VoiceError):
    """Bytes from the bus could not be decoded into a message."""


class ConfigError(VoiceError):
    """Settings are invalid or a required file is missing."""


class ModelFileError(ConfigError):
    """A model file is missing, incomplete or fails its checksum."""


class BusError(VoiceError):
    """The message bus failed."""


class OverloadedError(BusError):
    """No replica of ``service`` can take a new session right now."""

    def __init__(self, service: str) -> None:
        super().__init__(f"no {service} replica has room for a new call")
        self.service = service


class UnknownModelError(BusError):
    """The replicas of ``service`` have no backend for a model the call asked for."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


class StateConflictError(BusError):
    """Session state changed since ``revision`` was read (another writer won): re-read it."""

    def __init__(self, key: str, revision: int) -> None:
        super().__init__(f"state {key!r} changed since revision {revision}")
        self.key = key
        self.revision = revision


class EngineError(VoiceError):
    """An engine (VAD, ASR, LLM, TTS backend) failed."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProtocolError(VoiceError):
    """A client message violates its protocol; ``code`` is sent to the client."""

    def __init__(self, message: str, *, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code
