"""Judge replies cached on disk, so that rerunning an evaluation costs no requests.

One JSON line per reply, keyed by a SHA-256 of everything that decides it (the judge's
configuration, the prompt, the response). Only the main thread writes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from disalign.core.runs import cut_torn_line


def cache_key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class ReplyCache:
    def __init__(self, path: Path):
        self.path = path
        self._replies: dict[str, str] = {}
        cut_torn_line(path)
        if not path.exists():
            return
        for line in path.read_bytes().decode("utf-8", "replace").splitlines():
            try:
                entry = json.loads(line)
                self._replies[entry["key"]] = entry["reply"]
            except (ValueError, KeyError, TypeError):
                continue

    def get(self, key: str) -> str | None:
        return self._replies.get(key)

    def put(self, key: str, reply: str) -> None:
        self._replies[key] = reply
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "reply": reply}) + "\n")
