"""Run directories: the one on-disk layout every command writes.

    DIR/config.json    what was asked for, package versions, seeds
    DIR/records.jsonl  one record per generation or judgement, appended and flushed as made
    DIR/summary.json   the aggregate, rewritten atomically
    DIR/*.png          plots

A rerun with the same DIR continues: records whose key is already on disk are skipped.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from disalign.errors import UserError

CONFIG = "config.json"
RECORDS = "records.jsonl"
SUMMARY = "summary.json"
_TRACKED_PACKAGES = ("disalign", "torch", "transformers", "peft", "trl", "tokenizers", "numpy")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


class RunDir:
    """An output directory owned by one kind of command.

    `command` names the verb that owns it; `config` is what the user asked for. Reopening a
    directory with a different command or a different config is refused, so a resumed run
    never mixes records of two experiments.
    """

    def __init__(self, path: str | Path, command: str, config: dict[str, Any]):
        self.path = Path(path)
        self.command = command
        self.config = config
        self._claim()
        self._drop_torn_tail()
        self._done = {record["key"] for record in self.records() if "key" in record}

    def _claim(self) -> None:
        config_path = self.path / CONFIG
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a directory")
        if config_path.exists():
            stored = read_json(config_path)
            if stored.get("command") != self.command:
                raise UserError(
                    f"{self.path}: holds a '{stored.get('command')}' run, not '{self.command}'; choose another --out"
                )
            if stored.get("config") != _jsonable(self.config):
                raise UserError(
                    f"{self.path}: holds a run with a different configuration; choose another --out to start a new one"
                )
            return
        if self.path.exists() and any(self.path.iterdir()):
            raise UserError(f"{self.path}: not empty and not a disalign run directory; choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            config_path,
            {
                "command": self.command,
                "config": _jsonable(self.config),
                "versions": package_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def _drop_torn_tail(self) -> None:
        """A run killed mid-write leaves a partial last line; cut it so appends stay valid."""
        path = self.path / RECORDS
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])

    def records(self) -> Iterator[dict[str, Any]]:
        path = self.path / RECORDS
        if not path.exists():
            return
        with path.open() as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                yield json.loads(line)

    def is_done(self, key: str) -> bool:
        return key in self._done

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        with (self.path / RECORDS).open("a") as handle:
            for record in records:
                handle.write(json.dumps(record, default=str) + "\n")
                if "key" in record:
                    self._done.add(record["key"])
            handle.flush()
            os.fsync(handle.fileno())

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / SUMMARY, summary)

    def file(self, name: str) -> Path:
        return self.path / name


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
