"""Named upstream data sets: where each lives, and the one explicit way to fetch it.

Nothing is downloaded unless a caller asks (`fetch_source`, or `load_prompts(..., offline=False)`);
otherwise a missing file is a UserError that says what to download and where to put it.
Files are cached under `cache_root()/data/<name>/`.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from disalign.errors import UserError
from disalign.paths import cache_root

DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class Upstream:
    name: str
    file: str | None  # None: a folder of files (HEx-PHI)
    url: str | None  # None: gated, only a person can download it
    page: str


UPSTREAM = {
    source.name: source
    for source in (
        Upstream(
            "advbench",
            "harmful_behaviors.csv",
            "https://raw.githubusercontent.com/llm-attacks/llm-attacks/main/data/advbench/harmful_behaviors.csv",
            "https://github.com/llm-attacks/llm-attacks",
        ),
        Upstream(
            "harmbench",
            "harmbench_behaviors_text_all.csv",
            "https://raw.githubusercontent.com/centerforaisafety/HarmBench/main/data/behavior_datasets/"
            "harmbench_behaviors_text_all.csv",
            "https://github.com/centerforaisafety/HarmBench",
        ),
        Upstream(
            "donotanswer",
            "data_en.csv",
            "https://raw.githubusercontent.com/Libr-AI/do-not-answer/main/datasets/data_en.csv",
            "https://github.com/Libr-AI/do-not-answer",
        ),
        Upstream("hexphi", None, None, "https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI"),
    )
}


def data_cache(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    return Path(cache_dir) if cache_dir is not None else cache_root() / "data"


def cached_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a named source lives once downloaded: its file, or its folder for HEx-PHI."""
    source = UPSTREAM[name]
    folder = data_cache(cache_dir) / name
    return folder / source.file if source.file else folder


def is_cached(name: str, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    path = cached_path(name, cache_dir)
    return path.is_file() or (path.is_dir() and any(path.glob("*.csv")))


def missing_message(name: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    source = UPSTREAM[name]
    path = cached_path(name, cache_dir)
    if source.url is None:
        return (
            f"{name}: not downloaded; it is gated: request access at {source.page}, then put its "
            f"eleven CSV files (category_1.csv ... category_11.csv) in {path}/"
        )
    return f"{name}: not downloaded; download {source.url} and save it as {path} (or allow fetching)"


def fetch_source(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download a named source into the cache (once) and return its path."""
    if name not in UPSTREAM:
        raise UserError(f"unknown data source '{name}'; known: {', '.join(UPSTREAM)}")
    source = UPSTREAM[name]
    path = cached_path(name, cache_dir)
    if is_cached(name, cache_dir):
        return path
    if source.url is None:
        raise UserError(missing_message(name, cache_dir))
    try:
        request = urllib.request.Request(source.url, headers={"User-Agent": "disalign"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise UserError(f"{name}: cannot download {source.url} ({reason}); save it yourself as {path}") from None
    if not payload.strip():
        raise UserError(f"{name}: {source.url} returned an empty file")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(payload)
    os.replace(partial, path)
    return path
