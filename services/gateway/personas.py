"""Persona presets: a character's system prompt and default voice, per language.

Presets are data files (``services/gateway/presets/*.toml``, shipped as package data),
loaded once when the gateway starts. A session selects one by name (Bella: the
``persona`` field of ``StartTranscription``), optionally with a language:
``"qingqing"`` (the preset's default language) or ``"qingqing:en"``. The deployment's
default persona (``GATEWAY_DEFAULT_PERSONA``) applies to sessions that name none; the
session's own ``sys_prompt`` and ``voice`` always win over the preset's.

File format::

    name = "qingqing"
    aliases = ["doreen"]
    default_language = "zh"
    [languages.zh]
    voice = "zh_female"
    system_prompt = \"\"\"...\"\"\"
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError, ProtocolError

_PRESETS_PACKAGE = "services.gateway"
_PRESETS_DIR = "presets"


class UnknownPersonaError(ProtocolError):
    """A session asked for a persona (or a language of one) that does not exist."""


class _Language(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    voice: str | None = None
    system_prompt: str = Field(min_length=1, max_length=32_000)


class _PresetFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")
    aliases: tuple[str, ...] = ()
    default_language: str
    languages: dict[str, _Language] = Field(min_length=1)


@dataclass(frozen=True)
class Persona:
    """One persona in one language."""

    name: str
    language: str
    system_prompt: str
    voice: str | None


class PersonaBook:
    """The presets a gateway offers, by name and alias (case-insensitive)."""

    def __init__(self, presets: Iterable[_PresetFile]) -> None:
        self._presets: dict[str, _PresetFile] = {}
        for preset in presets:
            if preset.default_language not in preset.languages:
                raise ConfigError(
                    f"persona {preset.name}: default_language {preset.default_language!r} "
                    "has no [languages] entry"
                )
            for key in (preset.name, *preset.aliases):
                if key.lower() in self._presets:
                    raise ConfigError(f"persona name {key!r} is defined twice")
                self._presets[key.lower()] = preset

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted({p.name for p in self._presets.values()}))

    def select(self, selector: str) -> Persona:
        """``name`` or ``name:language``; `UnknownPersonaError` says what exists."""
        name, _, language = selector.strip().partition(":")
        preset = self._presets.get(name.strip().lower())
        if preset is None:
            known = ", ".join(self.names) or "none"
            raise UnknownPersonaError(f"unknown persona {name!r}; available: {known}")
        lang = language.strip().lower() or preset.default_language
        entry = preset.languages.get(lang)
        if entry is None:
            known = ", ".join(sorted(preset.languages))
            raise UnknownPersonaError(
                f"persona {preset.name} has no language {lang!r}; available: {known}"
            )
        return Persona(preset.name, lang, entry.system_prompt.strip(), entry.voice)


def parse_preset(text: str, source: str) -> _PresetFile:
    """One preset file's content; `ConfigError` naming ``source`` when it is wrong."""
    try:
        return _PresetFile.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"persona preset {source}: {exc}") from exc


def _preset_files() -> list[Traversable]:
    folder = resources.files(_PRESETS_PACKAGE).joinpath(_PRESETS_DIR)
    return sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)


@functools.cache
def builtin_personas() -> PersonaBook:
    """The presets shipped with the gateway."""
    return PersonaBook(parse_preset(f.read_text(encoding="utf-8"), f.name) for f in _preset_files())


def check_default(book: PersonaBook, selector: str) -> Persona | None:
    """The deployment's default persona (``""``: none); a bad name is a `ConfigError`."""
    if not selector.strip():
        return None
    try:
        return book.select(selector)
    except UnknownPersonaError as exc:
        raise ConfigError(f"GATEWAY_DEFAULT_PERSONA: {exc}") from exc
