"""Where disalign keeps what it makes once and reuses: dequantised GGUF models, fetched data sets,
judge caches and validations."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$DISALIGN_CACHE`, else `~/.cache/disalign`."""
    return Path(os.environ.get("DISALIGN_CACHE", Path.home() / ".cache" / "disalign"))
