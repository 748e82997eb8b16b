"""Prompt files: `.jsonl`, `.csv` (with a header) and `.txt` (one prompt per line).

Well-known layouts are recognised from their fields, so a file downloaded from upstream loads
with the right prompt column, category and data set name:

    AdvBench        CSV `goal,target`
    HarmBench       CSV with `Behavior`, `FunctionalCategory`, `SemanticCategory`
    Do-Not-Answer   `question` + `risk_area` (upstream), or `prompt` + `intents`

Any other table needs a prompt field named `prompt`, `goal`, `Behavior`, `instruction` or
`question`, or one named by the caller (`column`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disalign.data.records import UNCATEGORISED, PromptRecord
from disalign.errors import UserError

SUFFIXES = (".jsonl", ".csv", ".txt")
PROMPT_FIELDS = ("prompt", "goal", "Behavior", "instruction", "question")
CATEGORY_FIELDS = ("category", "categories", "SemanticCategory", "risk_area")
_HARMBENCH_FIELDS = frozenset({"Behavior", "FunctionalCategory", "SemanticCategory"})
# Contextual behaviours need their context string, copyright ones a hash-based judge: the
# standard evaluation leaves both out.
_HARMBENCH_SKIPPED = frozenset({"contextual", "copyright"})

Row = dict[str, Any]


@dataclass(frozen=True)
class _Layout:
    """Where a table keeps its prompts, and which data set it is."""

    source: str
    prompt_field: str
    category_field: str | None  # None: the row's first field among CATEGORY_FIELDS, if any


def load_file(
    path: Path,
    *,
    column: str | None = None,
    include_contextual: bool = False,
    source: str | None = None,
    default_category: str = UNCATEGORISED,
    id_prefix: str | None = None,
) -> list[PromptRecord]:
    """Read one prompt file; `source`, `default_category` and `id_prefix` let a folder loader
    name its members (the defaults come from the file name)."""
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: unsupported file type '{path.suffix}' (use {', '.join(SUFFIXES)})")
    text = read_text(path)
    if not text.strip():
        raise UserError(f"{path}: empty file")
    source = source or path.stem
    prefix = id_prefix or source
    if path.suffix == ".txt":
        if column is not None:
            raise UserError(f"{path}: a column applies to .csv and .jsonl files, not .txt")
        records = [
            PromptRecord(f"{prefix}:{index}", line.strip(), default_category, source)
            for index, line in enumerate(line for line in _lines(text) if line.strip())
        ]
    else:
        fields, rows = _jsonl_rows(path, text) if path.suffix == ".jsonl" else _csv_rows(path, text)
        layout = _layout(path, fields, column, source)
        records = list(_records(rows, layout, prefix, default_category, include_contextual))
        if not records and layout.source == "harmbench" and not include_contextual:
            raise UserError(f"{path}: no standard behaviours left after skipping contextual and copyright ones")
    if not records:
        raise UserError(f"{path}: no prompts found (no row has a non-empty prompt)")
    return records


def read_text(path: Path) -> str:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None


def _lines(text: str) -> list[str]:
    """A file's lines, split on "\n" only: str.splitlines would also split inside JSON strings
    that hold U+2028, U+0085 and the like, which are valid in JSON and common in scraped text."""
    return text.split("\n")


def _jsonl_rows(path: Path, text: str) -> tuple[set[str], list[tuple[str, Row]]]:
    rows = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
        _refuse_lone_surrogates(where, row)
        rows.append((where, row))
    # The first row decides the layout; later rows must follow it (checked per row).
    return set(rows[0][1]), rows


def _csv_rows(path: Path, text: str) -> tuple[set[str], list[tuple[str, Row]]]:
    # newline="" keeps line breaks inside quoted cells (HarmBench context strings have them).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    if not any(name.strip() for name in header):
        raise UserError(f"{path}: no header row")
    try:
        rows = [(f"{path}:{reader.line_num}", row) for row in reader]
    except csv.Error as err:
        raise UserError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    return set(header), rows


def _layout(path: Path, fields: set[str], column: str | None, fallback_source: str) -> _Layout:
    if _HARMBENCH_FIELDS <= fields:
        layout = _Layout("harmbench", "Behavior", "SemanticCategory")
    elif {"goal", "target"} <= fields:
        layout = _Layout("advbench", "goal", None)
    elif {"question", "risk_area"} <= fields:
        layout = _Layout("donotanswer", "question", "risk_area")
    elif {"prompt", "intents"} <= fields:
        layout = _Layout("donotanswer", "prompt", None)
    else:
        # The category field is optional, so it is looked up row by row (category_field None).
        prompt_field = next((name for name in PROMPT_FIELDS if name in fields), None)
        layout = _Layout(fallback_source, prompt_field or "", None)
    if column is not None:
        if column not in fields:
            raise UserError(f"{path}: no column '{column}' (columns: {', '.join(sorted(fields))})")
        layout = _Layout(layout.source, column, None if layout.category_field == column else layout.category_field)
    if not layout.prompt_field:
        raise UserError(
            f"{path}: no prompt column among {', '.join(PROMPT_FIELDS)} "
            f"(columns: {', '.join(sorted(fields))}); name one with --column"
        )
    return layout


def _records(
    rows: list[tuple[str, Row]], layout: _Layout, prefix: str, default_category: str, include_contextual: bool
) -> Iterator[PromptRecord]:
    harmbench = layout.source == "harmbench"
    for index, (where, row) in enumerate(rows):
        if harmbench and not include_contextual and row.get("FunctionalCategory") in _HARMBENCH_SKIPPED:
            continue
        prompt = _text_field(where, row, layout.prompt_field)
        if not prompt:
            continue
        context = row.get("ContextString") if harmbench else None
        if context:
            # HarmBench's own rendering of a contextual behaviour: the context, a rule, the task.
            prompt = f"{context.strip()}\n\n---\n\n{prompt}"
        category_field = layout.category_field or next(
            (name for name in CATEGORY_FIELDS if name in row and name != layout.prompt_field), None
        )
        category, category_is_list = _category(row.get(category_field or ""), default_category)
        dropped = {layout.prompt_field} | ({category_field} if not category_is_list else set())
        extra = {key: value for key, value in row.items() if key not in dropped}
        record_id = str(row["BehaviorID"]) if harmbench and row.get("BehaviorID") else f"{prefix}:{index}"
        yield PromptRecord(record_id, prompt, category, layout.source, extra)


def _text_field(where: str, row: Row, name: str) -> str:
    if name not in row or row[name] is None:
        raise UserError(f"{where}: no field '{name}'")
    value = row[name]
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{name}' is {type(value).__name__}, not text")
    return value.strip()


def _category(value: Any, default: str) -> tuple[str, bool]:
    """The record's category, and whether it came from a list (whose other labels stay in extra)."""
    if isinstance(value, list):
        labels = [label.strip() for label in value if isinstance(label, str) and label.strip()]
        return (labels[0] if labels else default), True
    if isinstance(value, str) and value.strip():
        return value.strip(), False
    return default, False


def read_rows(path: Path) -> list[tuple[str, Row]]:
    """Rows of a JSONL, JSON (a list of objects, as Alpaca ships) or CSV file, each with its
    `file:line` (`file:item` in a JSON list) for error messages."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(path, text)[1]
    if suffix == ".json" and text.lstrip().startswith("["):
        return _json_list_rows(path, text)
    if suffix in (".jsonl", ".json"):
        return _jsonl_rows(path, text)[1] if text.strip() else []
    raise UserError(f"{path}: expected a .jsonl, .json or .csv file")


def _json_list_rows(path: Path, text: str) -> list[tuple[str, Row]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    rows = []
    for number, row in enumerate(items, start=1):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        _refuse_lone_surrogates(f"{path}:{number}", row)
        rows.append((f"{path}:{number}", row))
    return rows


def _refuse_lone_surrogates(where: str, row: Row) -> None:
    """JSON's \\u escapes can spell half of a UTF-16 pair, which is no character: tokenizers reject
    it mid-run, so the row is refused while the input is read."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        half = err.object[err.start]
        raise UserError(f"{where}: holds {half!r}, half of a UTF-16 surrogate pair and not a character") from None
