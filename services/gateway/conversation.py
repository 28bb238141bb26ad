"""What a call's conversation starts from, besides what the client asks for.

One `ConversationDefaults` per gateway, built from its settings when it starts: the
persona presets, the deployment's default persona, the history cap. The protocol
adapters (e.g. `services.gateway.bella.session`) combine it with a session's own
options; a wrong ``GATEWAY_DEFAULT_PERSONA`` fails the gateway at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.gateway.personas import Persona, PersonaBook, builtin_personas, check_default
from services.gateway.settings import GatewaySettings


@dataclass(frozen=True)
class ConversationDefaults:
    personas: PersonaBook = field(default_factory=builtin_personas)
    default_persona: Persona | None = None
    max_history: int = 20

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ConversationDefaults:
        book = builtin_personas()
        return cls(
            personas=book,
            default_persona=check_default(book, settings.default_persona),
            max_history=settings.max_history,
        )
