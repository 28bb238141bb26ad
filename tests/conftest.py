"""Fixtures shared by every tier: a real NATS server and a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.natsserver import ContainerNats, LocalNats, docker_available

_ENV_PREFIXES = ("VOICE_", "ASR_", "LLM_", "TTS_", "GATEWAY_", "NATS_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's settings; each sets what it needs."""
    for key in list(os.environ):
        if key.startswith(_ENV_PREFIXES) and key != "VOICE_DATA_DIR":
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[Any]:
    """One real NATS (JetStream) for the session; says which kind it used."""
    server: Any
    if docker_available():
        server = ContainerNats()
    else:
        server = LocalNats()
        server.start()
    print(f"\n[nats] using {server.kind} at {server.url}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_nats() -> Iterator[LocalNats]:
    """A NATS this test alone controls (kill / restart / pause)."""
    server = LocalNats()
    server.start()
    try:
        yield server
    finally:
        server.stop()
