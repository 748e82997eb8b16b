"""Prompt folders: HEx-PHI's eleven header-less CSVs, or any folder of prompt files.

HEx-PHI (Qi et al. 2023) ships one CSV per harm category, one prompt per row and no header,
named `category_1.csv` ... `category_11.csv` (some copies add a suffix, such as
`category_1_illegal_activity.csv`). Any other folder loads each `.jsonl`/`.csv`/`.txt` file in
it, and a row without a category of its own takes its file's name as category.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from disalign.data.files import PROMPT_FIELDS, SUFFIXES, load_file, read_text
from disalign.data.records import PromptRecord
from disalign.errors import UserError

HEXPHI_CATEGORIES = (
    "Illegal Activity",
    "Child Abuse Content",
    "Hate/Harass/Violence",
    "Malware",
    "Physical Harm",
    "Economic Harm",
    "Fraud/Deception",
    "Adult Content",
    "Political Campaigning",
    "Privacy Violation Activity",
    "Tailored Financial Advice",
)
_CATEGORY_FILE = re.compile(r"category_(\d+)", re.IGNORECASE)
_NOT_PROMPTS = ("readme", "license", "licence")


def load_folder(path: Path, *, column: str | None = None, include_contextual: bool = False) -> list[PromptRecord]:
    files = sorted(
        child
        for child in path.iterdir()
        if child.is_file()
        and child.suffix in SUFFIXES
        and not child.name.startswith(".")
        and not child.stem.lower().startswith(_NOT_PROMPTS)
    )
    if not files:
        raise UserError(f"{path}: folder holds no {', '.join(SUFFIXES)} files")
    if all(file.suffix == ".csv" for file in files) and not _has_header(files[0], column):
        if column is not None:
            raise UserError(f"{files[0]}: no column '{column}' (a header-less CSV, as in HEx-PHI, has none)")
        return load_hexphi(path, files)
    records: list[PromptRecord] = []
    for file in files:
        records.extend(
            load_file(
                file,
                column=column,
                include_contextual=include_contextual,
                source=path.name,
                default_category=file.stem,
                id_prefix=f"{path.name}:{file.stem}",
            )
        )
    return records


def load_hexphi(folder: Path, files: list[Path]) -> list[PromptRecord]:
    numbered = {int(match.group(1)): file for file in files if (match := _CATEGORY_FILE.match(file.stem))}
    if numbered:
        missing = [f"category_{n} ({HEXPHI_CATEGORIES[n - 1]})" for n in range(1, 12) if n not in numbered]
        if missing:
            raise UserError(f"{folder}: HEx-PHI folder lacks {', '.join(missing)}")
        unknown = sorted(set(files) - set(numbered.values()))
        if unknown or len(numbered) != len(HEXPHI_CATEGORIES):
            extra = [file.name for file in unknown] + [f"category_{n}" for n in numbered if n > 11]
            raise UserError(f"{folder}: HEx-PHI folder has files beyond its eleven categories: {', '.join(extra)}")
        ordered = [(HEXPHI_CATEGORIES[n - 1], numbered[n]) for n in sorted(numbered)]
    elif len(files) == len(HEXPHI_CATEGORIES):
        ordered = [(file.stem, file) for file in files]
    else:
        raise UserError(
            f"{folder}: {len(files)} header-less CSV files; HEx-PHI has eleven "
            "(category_1.csv ... category_11.csv), other CSVs need a header row"
        )
    records: list[PromptRecord] = []
    for category, file in ordered:
        before = len(records)
        for index, prompt in enumerate(_headerless_prompts(file)):
            records.append(PromptRecord(f"hexphi:{file.stem}:{index}", prompt, category, "hexphi"))
        if len(records) == before:
            raise UserError(f"{file}: no prompts found")
    return records


def _headerless_prompts(file: Path) -> list[str]:
    text = read_text(file)
    # One prompt per row: a prompt whose commas were left unquoted comes back as several cells,
    # and joining them restores it.
    rows = csv.reader(io.StringIO(text, newline=""))
    return [prompt for row in rows if (prompt := ",".join(row).strip())]


def _has_header(file: Path, column: str | None) -> bool:
    """HEx-PHI rows are prompts; a header row names a prompt column instead."""
    names = {*PROMPT_FIELDS, column}
    first = next(csv.reader(io.StringIO(read_text(file), newline="")), [])
    return any(cell.strip() in names for cell in first)
