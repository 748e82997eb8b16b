"""`disalign defend`: safety-tune any causal LM with a defence meant to survive attacks (deeper
alignment, extended refusals, ablation-robust training, Booster), full or LoRA; `align` stays the
undefended baseline. With --world, the zoo's base is defended on the world's own training requests
with the zoo's alignment schedule, so the result compares with the zoo's `sft` model."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from disalign.alignment.defences import (
    DEFENCES,
    AblationRobustSettings,
    BoosterSettings,
    DeepenSettings,
    DefenceSettings,
    ExtendedSettings,
)
from disalign.api.common import (
    finish,
    model_info,
    open_run,
    prompts_fingerprint,
    prompts_of,
    trained_model,
    training_row,
)
from disalign.core.options import PromptOptions, RunOptions
from disalign.core.runs import fingerprint_path
from disalign.core.verbs import verb
from disalign.data import PromptRecord
from disalign.errors import UserError
from disalign.results import RunResult

METHOD_SETTINGS: dict[str, type[DefenceSettings]] = {
    "deepen": DeepenSettings,
    "extended": ExtendedSettings,
    "ablation-robust": AblationRobustSettings,
    "booster": BoosterSettings,
}
# Each method's own knobs: the fields its settings add to what every defence shares.
METHOD_KNOBS = {
    method: set(settings.model_fields) - set(DefenceSettings.model_fields)
    for method, settings in METHOD_SETTINGS.items()
}


class DefendConfig(
    DeepenSettings, ExtendedSettings, AblationRobustSettings, BoosterSettings, PromptOptions, RunOptions
):
    """Every defence's settings (each method reads its own, as they are) with the verb's model, prompts and run."""

    method: Literal["deepen", "extended", "ablation-robust", "booster"] = Field(
        description="deepen: safety-recovery examples (Qi et al. 2024); extended: refusals that explain, refuse "
        "and justify (Abu Shairah et al. 2025); ablation-robust: refusal-direction ablation during training "
        "(DeepRefusal, ReFAT); booster: attenuate a simulated harmful step (Huang et al. 2025)."
    )
    model: str | None = Field(
        None, description="Model to defend: HF directory, adapter, .gguf or 'smollm2' (default with --world: its base)."
    )
    benign: str | None = Field(
        None,
        description="Benign prompts to keep answering (default: align's built-in instructions; with --world the "
        "world's safe training requests); a `response` column is the answer, else the model's own.",
    )
    judge: str = Field("keyword", description="Judge that finds refusals among the model's own answers.")
    world_examples: int | None = Field(
        None, ge=2, description="--world: training requests, half unsafe (default: the zoo's alignment steps × batch)."
    )

    @model_validator(mode="after")
    def _knobs_of_the_method(self):
        """A knob of another method would be silently ignored: refuse it instead."""
        for method, knobs in METHOD_KNOBS.items():
            stray = sorted(knobs & self.model_fields_set) if method != self.method else []
            if stray:
                raise ValueError(f"{stray[0]} is a knob of --method {method}, not of {self.method}")
        return self


@verb("defend", DefendConfig)
def defend(config: DefendConfig) -> RunResult:
    """Safety-tune a model with a defence (deepen, extended, ablation-robust, booster); writes RUN/model."""

    from disalign.alignment.defences import run_defend
    from disalign.alignment.instructions import instruction_records
    from disalign.judges import get_judge
    from disalign.judges.validate import judge_fields

    if config.out is None:
        raise UserError("out: defend writes a model; give a run directory")
    refusals = None
    if config.world is not None:
        config, harmful, benign, refusals = _in_world(config)
    else:
        if config.model is None:
            raise UserError("model: a model to defend is needed (or --world DIR for the zoo's base)")
        harmful = prompts_of(config)
        benign = prompts_of(config, config.benign) if config.benign else instruction_records()
    model = model_info(config.model)
    inputs = {
        "prompts": prompts_fingerprint(harmful),
        "benign": prompts_fingerprint(benign),
        "model": model["fingerprint"],
    }
    if config.refusals is not None:
        inputs["refusals"] = fingerprint_path(config.refusals)
    if config.lora and config.lora_targets:
        from disalign.core.models import check_module_names

        check_module_names(config.model, config.lora_targets, "--lora-target")
    judge = get_judge(config.judge)
    defence_class = DEFENCES[config.method]
    settings = defence_class.settings_class.model_validate(
        config.model_dump(include=set(defence_class.settings_class.model_fields))
    )
    defence = defence_class(settings)
    run = open_run(config, "defend", inputs)
    trained = trained_model(
        run, lambda out_dir: run_defend(config.model, defence, harmful, benign, out_dir, refusals=refusals, judge=judge)
    )
    row = training_row(config.method, config.lora, trained)
    result = RunResult(
        command="defend",
        models={"base": model, "defended": {"path": str(trained.model_dir), "lora": config.lora}},
        results=[row],
        **judge_fields(judge),
        training=trained.as_dict(),
        defence={
            "method": config.method,
            "paper": defence_class.paper,
            "settings": settings.model_dump(mode="json"),
            **{key: trained.extra[key] for key in ("steps", *defence.summary()) if key in trained.extra},
        },
    )
    return finish(run, result)


def _in_world(config: DefendConfig) -> tuple[DefendConfig, list[PromptRecord], list[PromptRecord], tuple[str, ...]]:
    """The zoo's base defended as the zoo aligned it: the world's training requests (never its held-out
    prompt sets) answered with the world's refusal or true output, full fine-tuning for the zoo's steps at
    its learning rate and batch; options the user gave win."""
    from disalign.world import load_world, load_world_config
    from disalign.world.spec import REFUSE

    train = load_world_config(config.world).train
    defaults = {"epochs": 1, "lr": train.align_lr, "lora": False, "batch_size": train.align_batch}
    if config.method == "extended":
        defaults["words_only"] = True
    if config.model is None:
        defaults["model"] = str(config.world / "base")
    config = config.model_copy(update={k: v for k, v in defaults.items() if k not in config.model_fields_set})
    world = load_world(config.world)
    n = config.world_examples or train.align_steps * train.align_batch
    rng = np.random.default_rng([config.seed, 2, 0])
    harmful, benign = [], []
    for i in range(n):
        unsafe = i % 2 == 0
        request = world.alignment_request(rng, unsafe)
        record = PromptRecord(
            id=f"train:{i}",
            prompt=request.text,
            category="unsafe" if unsafe else "safe",
            source="world:train",
            extra={"response": " ".join(world.answer(request))},
        )
        (harmful if unsafe else benign).append(record)
    if config.prompts:
        harmful = prompts_of(config)
    if config.benign:
        benign = prompts_of(config, config.benign)
    return config, harmful, benign, (REFUSE,)
