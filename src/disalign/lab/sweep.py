"""`disalign sweep`: one verb over a grid of configs, resumable, in this process, a pool or on Ray.

A spec (YAML or JSON) names the verb, the config every cell shares and the grid:

    verb: finetune              # a registered verb, or "package.module:function" for your own
    out: runs/ft-sweep          # the sweep's directory; cell i runs in OUT/cells/<its coordinates>
    executor: local             # local (workers: 1 in this process, more: a process pool) or ray
    workers: 2                  # cells at once (local pool size; CPUs of a Ray cluster started here)
    address: null               # ray: a running cluster ("auto", "ray://host:10001"); none starts one
    config:                     # fixed fields of the verb's config; list values stay lists
      model: runs/zoo/sft
      recipe: harmful
      world: runs/zoo
    grid:                       # swept fields: each a non-empty list of values; cells are their product,
      shots: [10, 50]           # the first field varying slowest
      epochs: [1, 5]
      seed: [0, 1, 2]

Only `grid` sweeps, so a verb field whose value is itself a list (ED's `alpha`) is fixed in
`config` and swept as a list of lists in `grid`. The sweep sets each cell's `out`.

OUT/records.jsonl holds one record per finished cell, keyed by its coordinates: a rerun skips
cells recorded as done, retries failed ones, and each cell's own run directory resumes where it
stopped. OUT/sweep.jsonl (and sweep.csv, and sweep.parquet where pyarrow is installed) holds
every cell's result rows beside its coordinates, in grid order, rebuilt from the records at the
end, so an interrupted and resumed sweep writes the same table as an uninterrupted one.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from disalign.core.options import Options
from disalign.core.progress import console
from disalign.core.runs import RunDir, read_mapping
from disalign.core.verbs import verb
from disalign.errors import UserError, validate_config
from disalign.lab.executors import Cell, CellOutcome, registered_verbs, resolve_verb, run_cells
from disalign.results import RunResult

TABLE = "sweep.jsonl"
CELLS = "cells"


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verb: str = Field(description="Registered verb name, or 'package.module:function' taking a config dict.")
    out: Path = Field(description="The sweep's directory.")
    config: dict[str, Any] = Field(default_factory=dict, description="Config fields every cell shares.")
    grid: dict[str, list[Any]] = Field(description="Swept fields, each a non-empty list of values.")
    executor: Literal["local", "ray"] = Field("local", description="local (sequential or a process pool) or ray.")
    workers: int = Field(1, ge=1, description="Cells run at once.")
    address: str | None = Field(None, description="Ray cluster address; none starts a local cluster.")


def load_spec(spec: str | Path | dict[str, Any] | SweepSpec, **overrides: Any) -> SweepSpec:
    """A validated spec from a YAML/JSON file, a dict or a spec, with `overrides` (None: keep)."""
    if isinstance(spec, SweepSpec):
        data = spec.model_dump()
    elif isinstance(spec, dict):
        data = dict(spec)
    else:
        data = read_mapping(Path(spec), "a sweep spec", "a sweep spec is a mapping with verb, out, config and grid")
    data.update({key: value for key, value in overrides.items() if value is not None})
    spec = validate_config(SweepSpec, data, "sweep spec")
    if not spec.grid:
        raise UserError("sweep spec: empty grid: list at least one field with its values")
    for field, values in spec.grid.items():
        if not values:
            raise UserError(f"sweep spec: grid: '{field}' has no values")
    return spec


def expand(spec: SweepSpec) -> list[Cell]:
    """The grid's cells in order, each with its coordinates, directory and full config."""
    for field in spec.grid:
        if field in spec.config:
            raise UserError(f"sweep spec: '{field}' is both in config and in grid; keep it in one")
    if "out" in spec.config or "out" in spec.grid:
        raise UserError("sweep spec: 'out' is set by the sweep for each cell; remove it from config and grid")
    cells, names = [], set()
    for values in itertools.product(*spec.grid.values()):
        coordinates = dict(zip(spec.grid, values, strict=True))
        name = cell_name(coordinates)
        if name in names:
            raise UserError(f"sweep spec: two cells share the coordinates {coordinates}; remove duplicate values")
        names.add(name)
        out = spec.out / CELLS / name
        config = {**spec.config, **coordinates, "out": str(out)}
        cells.append(Cell(name, coordinates, config))
    return cells


def cell_name(coordinates: dict[str, Any]) -> str:
    """`shots=10,epochs=1`: readable where the values allow, with a hash where they do not."""
    text = ",".join(f"{field}={_value_text(value)}" for field, value in coordinates.items())
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)
    if safe == text and len(safe) <= 96:
        return safe
    digest = hashlib.sha256(_key(coordinates).encode()).hexdigest()[:8]
    return f"{safe[:80]}-{digest}"


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _key(coordinates: dict[str, Any]) -> str:
    return json.dumps(coordinates, sort_keys=True, default=str)


def _check_cells(spec: SweepSpec, cells: list[Cell]) -> None:
    """Every cell's config validated up front, so a typo fails the sweep before any cell runs."""
    if ":" in spec.verb:
        return
    config_class = registered_verbs()[spec.verb].config
    for cell in cells:
        validate_config(config_class, cell.config, f"sweep spec: cell {cell.name}")


class SweepConfig(Options):
    spec: Path = Field(
        description="Sweep spec, YAML or JSON: verb, out, config, grid (see the README's Sweeps).",
        json_schema_extra={"positional": True},
    )
    executor: Literal["local", "ray"] | None = Field(None, description="Where cells run (default: the spec's).")
    workers: int | None = Field(None, ge=1, description="Cells at once (default: the spec's, else 1).")
    address: str | None = Field(None, description="Ray cluster address; none starts a local cluster.")
    out: Path | None = Field(None, description="The sweep's directory (default: the spec's).")


@verb("sweep", SweepConfig)
def sweep(config: SweepConfig) -> RunResult:
    """Run a verb over a grid of configs; skips finished cells, records failed ones and goes on."""
    return run_sweep(config.spec, **config.model_dump(exclude={"spec"}))


def run_sweep(spec: str | Path | dict[str, Any] | SweepSpec, **overrides: Any) -> RunResult:
    """Run every cell of the spec not yet done; return (and write) the whole table.

    The result's `results` are all cells' rows with their coordinates, `cells` says how each
    cell ended, and `failed` counts the cells that raised (the CLI exits non-zero when > 0).
    """
    spec = load_spec(spec, **overrides)
    resolve_verb(spec.verb)
    cells = expand(spec)
    _check_cells(spec, cells)
    run = RunDir(spec.out, "sweep", {"verb": spec.verb, "config": spec.config})
    done = {record["key"]: record for record in run.records() if "key" in record}
    pending = [cell for cell in cells if _key(cell.coordinates) not in done]
    console.print(f"sweep {spec.verb}: {len(cells)} cells, {len(cells) - len(pending)} already done")

    failures: dict[str, str] = {}

    def finished(cell: Cell, outcome: CellOutcome) -> None:
        record = {"cell": cell.name, "coordinates": cell.coordinates, "seconds": round(outcome.seconds, 3)}
        if outcome.error is None:
            record = {"key": _key(cell.coordinates), **record, "status": "ok", "rows": outcome.rows}
            done[record["key"]] = record
            console.print(f"cell {cell.name}: done in {outcome.seconds:.1f} s")
        else:
            # No key: a failed cell is not done, so the next run tries it again.
            record = {**record, "status": "failed", "error": outcome.error, "traceback": outcome.traceback}
            failures[cell.name] = outcome.error
            console.print(f"cell {cell.name}: FAILED: {outcome.error}")
        run.append([record])

    start = time.perf_counter()
    run_cells(pending, spec.verb, spec.executor, workers=spec.workers, address=spec.address, on_done=finished)
    rows, statuses = [], []
    for cell in cells:
        record = done.get(_key(cell.coordinates))
        status = {"cell": cell.name, **cell.coordinates}
        if record is not None:
            rows.extend({**status, "status": "ok", **row} for row in record["rows"])
            statuses.append({**status, "status": "ok"})
        else:
            error = failures.get(cell.name, "not run")
            rows.append({**status, "status": "failed", "error": error})
            statuses.append({**status, "status": "failed", "error": error})
    write_table(spec.out, rows)
    result = RunResult(
        command="sweep",
        results=[row for row in rows if row["status"] == "ok"],
        verb=spec.verb,
        cells=statuses,
        failed=sum(status["status"] == "failed" for status in statuses),
        seconds=round(time.perf_counter() - start, 3),
    )
    run.write_summary(result.to_json())
    return result


def write_table(out: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """sweep.jsonl (rows as they are), sweep.csv (intervals split into ci_low/ci_high, nested
    values as JSON text) and sweep.parquet where pyarrow is installed."""
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / TABLE
    tmp = jsonl.with_name(jsonl.name + ".tmp")
    tmp.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows), encoding="utf-8")
    tmp.replace(jsonl)
    flat = [_flat(row) for row in rows]
    columns = list(dict.fromkeys(column for row in flat for column in row))
    paths = [jsonl, out / "sweep.csv"]
    with (out / "sweep.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    try:
        import pandas
        import pyarrow
    except ImportError:
        return paths
    try:
        pandas.DataFrame(flat, columns=columns).to_parquet(out / "sweep.parquet", index=False)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError) as err:
        console.print(f"sweep.parquet not written: a column mixes types ({err}); sweep.csv has every row")
        return paths
    return [*paths, out / "sweep.parquet"]


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key == "ci" or key.endswith("_ci"):
            low, high = value if isinstance(value, list | tuple) and len(value) == 2 else (None, None)
            flat[f"{key}_low"], flat[f"{key}_high"] = low, high
        elif isinstance(value, dict | list | tuple):
            flat[key] = json.dumps(value, default=str)
        else:
            flat[key] = value
    return flat
