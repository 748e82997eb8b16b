"""Run directories: the one on-disk layout every command writes.

    DIR/config.json    what was asked for, a fingerprint of every input read, package versions
    DIR/records.jsonl  one record per generation or judgement, appended and flushed as made
    DIR/summary.json   the aggregate, rewritten atomically
    DIR/*.png          plots
    DIR/.lock          held (flock) by the process that runs there; names its pid

A rerun with the same DIR continues: records whose key is already on disk are skipped. A rerun
whose configuration or inputs differ is refused, naming what changed (or starts afresh with
`overwrite`, which empties the folder only when its config.json is one that disalign wrote). The
directory is claimed (config.json written) only when the run first writes something, so a run
that fails while loading its inputs leaves nothing behind. A folder that is, holds or lies inside
one of the run's inputs is refused, and so is a folder another live process runs in.

With `path=None` a run lives in memory: records and summary are kept, nothing is written.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from disalign.errors import UserError, redact_secrets

CONFIG = "config.json"
RECORDS = "records.jsonl"
SUMMARY = "summary.json"
LOCK = ".lock"
# What RunDir writes into every config.json: a folder whose config.json lacks one of these was
# not written by disalign (a model folder, a project), and --overwrite must never empty it.
_CONFIG_KEYS = {"command": str, "config": dict, "inputs": dict, "versions": dict, "created": str}
_TRACKED_PACKAGES = ("disalign", "torch", "transformers", "peft", "trl", "tokenizers", "numpy")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def read_records(run_path: Path) -> Iterator[dict[str, Any]]:
    """The records of the run directory at `run_path`, in file order; none if it has no records file."""
    path = run_path / RECORDS
    if not path.exists():
        return
    with path.open("rb") as handle:
        # Split on b"\n" only: records may hold U+2028 or U+0085 inside their strings.
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                raise UserError(f"{path}: line {number} is corrupt; repair it or rerun with --overwrite") from None


def json_object(line: str, where: str) -> dict[str, Any]:
    """One line of a JSONL file that must hold a JSON object; `where` names the line when it does not."""
    try:
        data = json.loads(line)
    except ValueError:
        raise UserError(f"{where}: not a JSON object") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: not a JSON object")
    return data


def cut_torn_line(path: Path) -> int:
    """A process killed mid-write leaves a partial last line in the JSONL file at `path`: cut it, or the
    next append would be glued onto it. Returns the bytes cut (0: the file is whole or absent)."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    kept = data[: data.rfind(b"\n") + 1]
    path.write_bytes(kept)
    return len(data) - len(kept)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return _parse_json(_read_text(path, str(path), "a JSON file"), str(path))


def read_mapping(path: Path, what: str, holds: str, *, option: str = "") -> dict[str, Any]:
    """The mapping a JSON file (`.json`) or YAML file (any other name) holds: a `--config` file, a sweep
    spec. Each mistake is one line naming `option` (if any) and the file; `holds` says what the file must
    hold."""
    where = f"{option} {path}" if option else str(path)
    text = _read_text(path, where, what)
    data = _parse_json(text, where) if path.suffix.lower() == ".json" else _parse_yaml(text, where)
    if not isinstance(data, dict):
        raise UserError(f"{where}: {holds}")
    return data


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err.msg} at line {err.lineno})") from None


def _parse_yaml(text: str, where: str) -> Any:
    import yaml  # a superset of JSON: JSON in a file of another name reads too

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from None


def _read_text(path: Path, where: str, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{where}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{where}: is a directory, not {what}") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text") from None


def fingerprint(value: Any) -> str:
    """A short content hash of any JSON-able value (prompt rows, options, a world spec)."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    # surrogatepass: the same bytes as UTF-8 for any valid text, and a hash, not a crash, for a lone surrogate.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def fingerprint_path(path: str | os.PathLike[str]) -> str:
    """A content hash of a file, or of every file under a directory (names and bytes)."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"{root}: not found")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and p.name != LOCK)
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(str(file.relative_to(root) if file != root else file.name).encode())
        digest.update(_file_digest(file.resolve(), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()[:16]


@cache
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """Keyed by size and mtime too, so a file rewritten in place is hashed again."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class RunDir:
    """An output directory owned by one kind of command (or, with path None, a run in memory).

    `command` names the verb that owns it; `config` is what the user asked for; `inputs` maps
    each input the run read to a content fingerprint; `input_paths` are the files and folders it
    reads, which the directory must neither be, hold nor lie inside. Reopening a directory with
    another command, config or inputs is refused, so a resumed run never mixes two experiments.
    """

    def __init__(
        self,
        path: str | Path | None,
        command: str,
        config: dict[str, Any],
        *,
        inputs: dict[str, str] | None = None,
        input_paths: Iterable[str | os.PathLike[str]] = (),
        overwrite: bool = False,
    ):
        self.path = None if path is None else Path(path)
        self.command = command
        self.config = redact_secrets(_jsonable(config))
        self.inputs = dict(inputs or {})
        self._memory: list[dict[str, Any]] = []
        self._scratch: Path | None = None
        self.summary: dict[str, Any] | None = None
        self._claimed = False
        self._lock: _FolderLock | None = None
        if self.path is not None:
            _refuse_overlap_with_inputs(self.path, input_paths)
            self._check(overwrite)
        self._done = {record["key"] for record in self.records() if "key" in record}

    @property
    def persistent(self) -> bool:
        return self.path is not None

    def _check(self, overwrite: bool) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise UserError(f"{path}: exists and is not a directory")
        config_path = path / CONFIG
        if config_path.exists():
            stored = read_json(config_path)
            if not written_by_disalign(stored):
                raise UserError(
                    f"{path}: holds a config.json that disalign did not write (a model or a project?); "
                    "choose another --out (--overwrite empties only disalign runs)"
                )
            if overwrite:
                self._lock = _lock_folder(path)
                _empty_except_lock(path)
                return
            if stored["command"] != self.command:
                raise UserError(
                    f"{path}: holds a '{stored['command']}' run, not '{self.command}'; choose another --out"
                )
            changed = _differences(stored["config"], self.config) or _differences(
                stored["inputs"], self.inputs, "input "
            )
            if changed:
                raise UserError(
                    f"{path}: holds a run whose {changed} differs from this one; "
                    "choose another --out, or --overwrite to start afresh"
                )
            self._lock = _lock_folder(path)
            if read_json(config_path) != stored:
                raise UserError(f"{path}: another run rewrote it while this one started; rerun to continue it")
            self._drop_torn_tail()
            self._claimed = True
            return
        # A claim stopped mid-write leaves only its own config.json.tmp, which the next claim overwrites.
        if path.exists() and any(entry.name not in (LOCK, CONFIG + ".tmp") for entry in path.iterdir()):
            raise UserError(f"{path}: not empty and not a disalign run directory; choose another --out")
        _check_writable(path)

    def _claim(self) -> None:
        if self._claimed or self.path is None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"{self.path}: cannot create the run directory ({err.strerror})") from None
        if self._lock is None:
            self._lock = _lock_folder(self.path)
            if (self.path / CONFIG).exists():
                # Both runs found the folder empty; the other one wrote first.
                raise UserError(f"{self.path}: another run claimed it while this one started; rerun to continue it")
        write_json_atomic(
            self.path / CONFIG,
            {
                "command": self.command,
                "config": self.config,
                "inputs": self.inputs,
                "versions": package_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        self._claimed = True

    def _drop_torn_tail(self) -> None:
        path = self.path / RECORDS
        dropped = cut_torn_line(path)
        if dropped:
            print(f"disalign: {path}: dropped a torn last line ({dropped} bytes)", file=sys.stderr)

    def records(self) -> Iterator[dict[str, Any]]:
        if self.path is None:
            yield from self._memory
            return
        yield from read_records(self.path)

    def is_done(self, key: str) -> bool:
        return key in self._done

    def stage(self, key: str, compute: Callable[[], Any]) -> Any:
        """The value a stage of this run recorded under `key`, computed and recorded on first use,
        so a rerun after an interruption continues from the last finished stage."""
        for record in self.records():
            if record.get("key") == key:
                return record["value"]
        value = compute()
        self.append([{"key": key, "value": value}])
        return value

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Write records as one unit: one write and one fsync for the whole batch."""
        records = list(records)
        if not records:
            return
        for record in records:
            if "key" in record:
                self._done.add(record["key"])
        if self.path is None:
            self._memory.extend(_jsonable(record) for record in records)
            return
        self._claim()
        text = "".join(_json_line(record) + "\n" for record in records)
        with (self.path / RECORDS).open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.summary = redact_secrets(_jsonable(summary))
        if self.path is not None:
            self._claim()
            write_json_atomic(self.path / SUMMARY, self.summary)

    def file(self, name: str) -> Path:
        """A path for an artefact of this run (a plot, a trained model); in memory, a scratch
        directory that is removed with the process."""
        if self.path is None:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="disalign-run-"))
                _SCRATCH_DIRS.append(self._scratch)
            return self._scratch / name
        self._claim()
        return self.path / name


def written_by_disalign(config: Any) -> bool:
    """Whether a run folder's parsed config.json has the shape RunDir writes."""
    return isinstance(config, dict) and all(isinstance(config.get(key), kind) for key, kind in _CONFIG_KEYS.items())


def _refuse_overlap_with_inputs(path: Path, inputs: Iterable[str | os.PathLike[str]]) -> None:
    """A run folder that is, holds or lies inside an input would write over what it reads (and
    --overwrite would delete it), so it is refused before anything is read."""
    out = path.expanduser().resolve()
    for given in inputs:
        source = Path(given).expanduser().resolve()
        if out == source:
            where = "is"
        elif source in out.parents:
            where = "lies inside"
        elif out in source.parents:
            where = "holds"
        else:
            continue
        raise UserError(f"{path}: {where} the run's input {given}; choose another --out")


class _FolderLock:
    """An exclusive flock on DIR/.lock, released when the last RunDir of this process using DIR
    is gone (or the process ends, however it ends)."""

    def __init__(self, handle):
        self.handle = handle

    def __del__(self):
        self.handle.close()


# Several RunDirs of one process may open one folder (a rerun in the same Python session): they share its lock.
_HELD_LOCKS: weakref.WeakValueDictionary[Path, _FolderLock] = weakref.WeakValueDictionary()


def _lock_folder(path: Path) -> _FolderLock:
    key = path.resolve()
    held = _HELD_LOCKS.get(key)
    if held is not None:
        return held
    try:
        handle = (path / LOCK).open("a+", encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot be written ({err.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(
            f"{path}: another disalign run is writing there (process {holder}); "
            "wait for it to finish or choose another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    lock = _HELD_LOCKS[key] = _FolderLock(handle)
    return lock


def _empty_except_lock(path: Path) -> None:
    """--overwrite: everything in a disalign run folder goes (records, summary, plots, trained models)."""
    for entry in path.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _check_writable(path: Path) -> None:
    """Fail now, not after the work, where `path` cannot be created: tried for real (a folder made
    and removed in its nearest existing parent), since permission bits do not stop root and /proc
    or a read-only mount refuse anyone."""
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir():
        raise UserError(f"{path}: cannot be created ({existing} is a file)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".disalign-probe-", dir=existing))
    except OSError as err:
        raise UserError(f"{path}: cannot be written ({existing}: {err.strerror})") from None


_SCRATCH_DIRS: list[Path] = []


def _remove_scratch() -> None:
    for path in _SCRATCH_DIRS:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_remove_scratch)


def _differences(stored: Any, current: Any, prefix: str = "") -> str:
    """The first key whose value differs, as 'KEY (old -> new)'; '' when equal."""
    if stored == current:
        return ""
    if isinstance(stored, dict) and isinstance(current, dict):
        for key in sorted(set(stored) | set(current), key=str):
            if stored.get(key) != current.get(key):
                old, new = _short(stored.get(key)), _short(current.get(key))
                return f"{prefix}'{key}' ({old} -> {new})"
    return f"{prefix}configuration"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _json_line(value: Any) -> str:
    """One record as JSON that UTF-8 can write: readable as it is, or with every non-ASCII character
    escaped when a string holds a lone surrogate (which JSON's \\u escapes allow and UTF-8 cannot hold)."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, default=str)
    return text
