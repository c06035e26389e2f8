"""py-spy's raw (collapsed) output summarised: the hottest frames a benchmark stores in its results."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["hottest_frames"]


def hottest_frames(path: Path, top: int) -> dict[str, Any] | None:
    """Shares of samples per frame, inclusive and self; ``None`` when py-spy wrote nothing."""
    if not path.exists():
        return None
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    return {
        "file": str(path),
        "samples_holding_gil": total,
        "inclusive": {k: round(v / total, 3) for k, v in inclusive.most_common(top)} if total else {},
        "self": {k: round(v / total, 3) for k, v in own.most_common(top)} if total else {},
    }
