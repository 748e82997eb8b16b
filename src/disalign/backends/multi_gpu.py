"""Fine-tuning on several GPUs: each training cell in `accelerate launch` processes.

The verb stays one process: it reads prompts, trains cell after cell, evaluates and writes the
run's records. Only the training of a cell runs in the processes `accelerate launch` starts (DDP,
one per GPU, as an accelerate YAML says: configs/multi-gpu.yaml); this process waits for them and
then reads the saved model like any other cell's. The attack's batch size is the total over the
processes, so a multi-GPU run trains with the same batches as a single-device one.

    train = launcher("src/disalign/backends/configs/multi-gpu.yaml")
    result = train(model_path, dataset, training_config, out_dir)   # as training.sft.finetune
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from disalign.core.runs import write_json_atomic
from disalign.errors import UserError
from disalign.training.config import TrainingConfig
from disalign.training.sft import RESULT, FinetuneResult

CONFIGS = Path(__file__).parent / "configs"
JOB = "launch.json"


def launcher(accelerate_config: str | Path) -> Callable[..., FinetuneResult]:
    """A drop-in for `training.sft.finetune` that trains in `accelerate launch` processes."""
    config_path = Path(accelerate_config)
    processes = _processes(config_path)

    def train(model_path, dataset: list[dict[str, Any]], config: TrainingConfig, out_dir) -> FinetuneResult:
        if config.batch_size % processes:
            raise UserError(
                f"batch size {config.batch_size} does not split over {processes} processes ({config_path}); "
                "choose a multiple"
            )
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        job = out_dir / JOB
        kind = f"{type(config).__module__}:{type(config).__qualname__}"  # AttackConfig and others extend it
        write_json_atomic(
            job, {"model": str(model_path), "dataset": dataset, "config": config.model_dump(), "config_class": kind}
        )
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path)]
        completed = subprocess.run([*command, "-m", __name__, str(job)], check=False)
        if completed.returncode != 0 or not (out_dir / RESULT).is_file():
            raise RuntimeError(f"accelerate launch exited with status {completed.returncode}; its output is above")
        data = json.loads((out_dir / RESULT).read_text())
        return FinetuneResult(**{**data, "model_dir": Path(data["model_dir"])})

    return train


def _processes(config_path: Path) -> int:
    import yaml

    if not config_path.is_file():
        known = ", ".join(sorted(p.name for p in CONFIGS.glob("*.yaml")))
        raise UserError(f"{config_path}: accelerate config not found (examples in {CONFIGS}: {known})")
    settings = yaml.safe_load(config_path.read_text()) or {}
    processes = settings.get("num_processes", 1)
    if not isinstance(processes, int) or processes < 1:
        raise UserError(f"{config_path}: num_processes must be a positive integer, got {processes!r}")
    return processes


def main(job_path: str) -> None:
    """One process of the launch: train the job's cell; the first process saves the model."""
    from accelerate import PartialState

    from disalign.training.sft import finetune

    job = json.loads(Path(job_path).read_text())
    state = PartialState()
    module, _, name = job["config_class"].partition(":")
    config = getattr(importlib.import_module(module), name)(**job["config"])
    per_process = max(1, min(config.batch_size, len(job["dataset"])) // state.num_processes)
    finetune(
        job["model"],
        job["dataset"],
        config,
        Path(job_path).parent,
        use_cpu=state.device.type == "cpu",
        per_device_train_batch_size=per_process,
    )


if __name__ == "__main__":
    main(sys.argv[1])
