"""Prompt sources: files, folders, named upstream data sets, synthetic worlds, a benign control set."""

from disalign.data.records import UNCATEGORISED, PromptRecord
from disalign.data.sources import BENIGN_CONTROL, load_prompts
from disalign.data.upstream import UPSTREAM, fetch_source

__all__ = ["BENIGN_CONTROL", "UNCATEGORISED", "UPSTREAM", "PromptRecord", "fetch_source", "load_prompts"]
