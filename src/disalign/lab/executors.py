"""Where a sweep's cells run: in this process, in a local process pool, or on a Ray cluster.

Every executor calls `run_cell` once per cell and hands each outcome, as it arrives, to the
sweep's `on_done` in this process, which alone writes the sweep's records.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from disalign.errors import UserError
from disalign.results import RunResult


@dataclass(frozen=True)
class Cell:
    name: str
    coordinates: dict[str, Any]
    config: dict[str, Any]  # the verb's whole config, its `out` included


@dataclass(frozen=True)
class CellOutcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # one line; None when the cell finished
    traceback: str | None = None  # for errors that are bugs, not mistakes in the input
    seconds: float = 0.0


OnDone = Callable[[Cell, CellOutcome], None]


def resolve_verb(name: str) -> Callable[[dict[str, Any]], Any]:
    """The function a cell calls: a registered verb, or `package.module:function`."""
    if ":" in name:
        import importlib

        module_name, _, attribute = name.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as err:
            raise UserError(f"sweep spec: verb '{name}' cannot be imported ({err})") from None
        if not callable(function):
            raise UserError(f"sweep spec: verb '{name}' is not callable")
        return function
    verbs = registered_verbs()
    if name not in verbs:
        known = ", ".join(sorted(verbs)) or "none registered"
        raise UserError(f"sweep spec: unknown verb '{name}' (known: {known}; or give package.module:function)")
    return verbs[name].run


def registered_verbs() -> dict[str, Any]:
    """Verb name -> its registry entry (`.run`, `.config`); the sweep verb itself excluded."""
    # Imported here, not at the top: a pool or Ray worker unpickles `run_cell` by this module's
    # name, and its verbs register when imported, the API's and the lab's (demo, surface) alike;
    # through the package, since the surface runs sweeps and a lab module importing it would be a circle.
    import disalign  # noqa: F401
    from disalign.core.verbs import VERBS

    return {name: verb for name, verb in VERBS.items() if name != "sweep"}


def run_cell(verb: str, config: dict[str, Any]) -> CellOutcome:
    """Call the verb on one cell's config; an exception becomes the cell's error, not the sweep's."""
    start = time.perf_counter()
    try:
        result = resolve_verb(verb)(config)
        if not isinstance(result, RunResult):
            result = RunResult.model_validate(result)
        return CellOutcome(rows=result.to_json()["results"], seconds=time.perf_counter() - start)
    except UserError as err:
        return CellOutcome(error=str(err), seconds=time.perf_counter() - start)
    except Exception as err:
        return CellOutcome(
            error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(), seconds=time.perf_counter() - start
        )


def run_cells(
    cells: list[Cell], verb: str, executor: str, *, workers: int, address: str | None, on_done: OnDone
) -> None:
    if not cells:
        return
    if executor == "ray":
        _on_ray(cells, verb, workers, address, on_done)
    elif workers == 1:
        for cell in cells:
            on_done(cell, run_cell(verb, cell.config))
    else:
        _in_process_pool(cells, verb, workers, on_done)


def _in_process_pool(cells: list[Cell], verb: str, workers: int, on_done: OnDone) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child of a process that has started torch's threads can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(cells)), mp_context=context) as pool:
        futures = {pool.submit(run_cell, verb, cell.config): cell for cell in cells}
        for future in as_completed(futures):
            on_done(futures[future], _outcome(future.result))


def _on_ray(cells: list[Cell], verb: str, workers: int, address: str | None, on_done: OnDone) -> None:
    try:
        import ray
    except ImportError:
        raise UserError(
            "executor ray: Ray is not installed; pip install 'disalign[ray]' or use executor local"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            # Without an address Ray starts a cluster on this machine with `workers` CPUs.
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False)
        except ConnectionError as err:
            raise UserError(f"executor ray: cannot connect to the cluster at {address!r} ({err})") from None
    try:
        remote_cell = ray.remote(num_cpus=1)(run_cell)
        pending = {remote_cell.remote(verb, cell.config): cell for cell in cells}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                on_done(pending.pop(ref), _outcome(lambda ref=ref: ray.get(ref)))
    finally:
        if started_here:
            ray.shutdown()


def _outcome(get: Callable[[], CellOutcome]) -> CellOutcome:
    """The cell's outcome, or its worker's death (killed, out of memory) as the cell's error."""
    try:
        return get()
    except Exception as err:
        return CellOutcome(error=f"worker lost: {type(err).__name__}: {err}".splitlines()[0])
