"""`disalign eval`: generate responses with a model's chat template, judge them, summarise harm."""

from __future__ import annotations

from pydantic import Field

from disalign.api.common import finish, judge_of, model_info, open_run, prompts_fingerprint, prompts_of
from disalign.backends import BackendOptions
from disalign.core.options import JudgeOptions, PromptOptions, RunOptions, SamplingOptions
from disalign.core.verbs import verb
from disalign.results import RunResult


class EvalConfig(PromptOptions, JudgeOptions, SamplingOptions, BackendOptions, RunOptions):
    model: str = Field(description="Model: HF directory, adapter directory, .gguf file or 'smollm2'.")


@verb("eval", EvalConfig)
def eval(config: EvalConfig) -> RunResult:  # noqa: A001  (the verb's name, as on the command line)
    """Generate responses with a model's chat template, judge them, summarise harm."""
    from disalign.backends import backend_responder
    from disalign.core.evaluate import generate_and_judge, summarise
    from disalign.judges.compare import JudgePanel, compare_records
    from disalign.judges.validate import judge_fields

    records = prompts_of(config)
    judge = judge_of(config)
    model = model_info(config.model)
    run = open_run(config, "eval", {"prompts": prompts_fingerprint(records), "model": model["fingerprint"]})
    sampling = config.sampling()
    done = generate_and_judge(
        run,
        records,
        backend_responder(config.backend, config.model, sampling),
        judge,
        batch_size=sampling.batch_size,
        seed=sampling.seed,
        key=lambda p: p.id,
    )
    rates = summarise(done)
    if isinstance(judge, JudgePanel):
        rates["judges"] = compare_records(done)
    row = {key: rates[key] for key in ("harmful_rate", "refusal_rate", "ci", "n")}
    result = RunResult(
        command="eval",
        models={"model": model},
        results=[row],
        **judge_fields(judge),
        **rates,
        model=config.model,
        prompts=config.prompts,
    )
    return finish(run, result)
