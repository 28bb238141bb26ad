"""Joining and verifying packaged model parts (with a small package made by the test)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.errors import ModelFileError
from shared.modelfiles import ModelSpec, PackagedFile, ensure_model


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[bytes]:
    pkg = tmp_path / "site" / "tiny_model_parts"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "a.part").write_bytes(b"hello ")
    (pkg / "data" / "b.part").write_bytes(b"world")
    (pkg / "data" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield b"hello world"
    sys.modules.pop("tiny_model_parts", None)


def _spec(digest: str, size: int | None = None) -> ModelSpec:
    return ModelSpec(
        name="tiny",
        filename="model.bin",
        parts=(
            PackagedFile("tiny_model_parts", "data/a.part"),
            PackagedFile("tiny_model_parts", "data/b.part"),
        ),
        sha256=digest,
        size=size,
        companions=(PackagedFile("tiny_model_parts", "data/config.json"),),
    )


def test_joins_verifies_and_reuses(fake_parts: bytes, tmp_path: Path) -> None:
    digest = hashlib.sha256(fake_parts).hexdigest()
    out = ensure_model(_spec(digest, len(fake_parts)), tmp_path / "cache")
    assert (out / "model.bin").read_bytes() == fake_parts
    assert (out / "config.json").is_file()
    stamp = (out / "model.bin.verified.json").stat().st_mtime_ns
    ensure_model(_spec(digest), tmp_path / "cache")  # second call reuses the verified file
    assert (out / "model.bin.verified.json").stat().st_mtime_ns == stamp


def test_refuses_a_wrong_digest(fake_parts: bytes, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="SHA-256 mismatch"):
        ensure_model(_spec("0" * 64), tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny" / "model.bin").exists()


def test_refuses_wrong_size_and_missing_package(fake_parts: bytes, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="expected 3"):
        ensure_model(_spec("0" * 64, 3), tmp_path / "cache")
    missing = ModelSpec(
        name="m", filename="f", parts=(PackagedFile("no_such_pkg_x", "d"),), sha256="0" * 64
    )
    with pytest.raises(ModelFileError, match="not installed"):
        ensure_model(missing, tmp_path / "cache")
