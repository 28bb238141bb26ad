"""``python -m shared.prepare``: join and verify every embedded model, with progress.

Run by ``./run`` before anything starts, so services load verified files and the
slow part (hashing ~700 MB) happens once, visibly, not inside a service's start-up.
"""

from __future__ import annotations

import sys
import time

from shared.errors import ModelFileError
from shared.modelfiles import QWEN_05B, WHISPER_BASE, ensure_model
from shared.settings import CommonSettings


def main() -> int:
    settings = CommonSettings()
    last = [0.0]

    def progress(name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or done == total:
            last[0] = now
            pct = 100.0 * done / max(total, 1)
            print(f"\r[models] {name}: joining and verifying {pct:5.1f}%", end="", file=sys.stderr)
            if done == total:
                print(file=sys.stderr)

    for spec in (WHISPER_BASE, QWEN_05B):
        try:
            path = ensure_model(spec, settings.model_cache, progress)
        except ModelFileError as exc:
            print(f"[models] {exc}", file=sys.stderr)
            return 1
        print(f"[models] {spec.name}: verified ({path})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
