"""What Behavior Expectation Bounds measure on: a *setting* supplies sentences of the two mixture
components, harmful requests with their harmful answers, and how to put them to a model.

Lengths count sentences (PAPERS.md §4.5: sentence splitting defines every length, so a setting
fixes it). This room never imports a setting's provider: a provider registers a factory under a
name, as judges do in `disalign.judges.base` (the synthetic world registers `world`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from disalign.core.registry import Registry

Component = Literal["negative", "positive"]
COMPONENTS: tuple[Component, ...] = ("negative", "positive")


@dataclass(frozen=True)
class Sentence:
    """One unit of length as token ids; `scored` marks the ids every log-probability counts
    (a world episode scores its response: both personas draw the requests alike); `text` is what
    a setting that renders prompts from text (a chat template) puts back."""

    ids: tuple[int, ...]
    scored: tuple[bool, ...]
    text: str = ""

    def __post_init__(self):
        if len(self.ids) != len(self.scored):
            raise ValueError(f"{len(self.ids)} ids but {len(self.scored)} scored flags")


@dataclass(frozen=True)
class Target:
    """A harmful request: the ids that put it to the model after a prompt (`cue`), the harmful
    answer's ids (scored for the many-shot NLL) and the request text a judge reads."""

    cue: tuple[int, ...]
    answer: tuple[int, ...]
    request: str


class Setting(Protocol):
    name: str
    context: int | None  # the most tokens a prompt may hold (None: no limit known)
    trained_context: int | None  # the most the model was trained on, when shorter (the world's pretraining rows)
    stop_ids: frozenset[int]  # ids that end a sampled sentence or answer (kept in it)
    max_sentence_tokens: int
    exact: dict[str, float]  # quantities the setting knows exactly (the world: alpha, log_inv_alpha, beta)
    judge: tuple[str, dict[str, Any]]  # the registry name and options of the judge that scores behaviour

    def start(self) -> list[int]:
        """Ids before the first sentence (a BOS token)."""
        ...

    def sentences(self, component: Component, n: int, seed: int) -> list[Sentence]:
        """n held-out sentences of a component (exact samples where the setting has them)."""
        ...

    def cues(self, n: int, seed: int) -> list[tuple[int, ...]]:
        """Unscored ids that open each sampled continuation (a world request; empty for text)."""
        ...

    def targets(self, n: int, seed: int) -> list[Target]: ...

    def prompt_ids(self, sentences: Sequence[Sentence], target: Target | None = None) -> list[int]:
        """The prompt: the sentences in order, then the target put to the model (if any)."""
        ...

    def continuation(self, ids: Sequence[int], scored: Sequence[bool]) -> Sentence:
        """The sentence a sampled continuation makes (its cue ids unscored)."""
        ...

    def training_examples(self, component: Component, n: int, seed: int) -> list[dict[str, Any]]:
        """Fine-tuning examples (`messages`) of a component, for the LoRA proxies of P₋ and P₊."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...


SettingFactory = Callable[..., Setting]
SETTINGS: Registry[SettingFactory] = Registry("BEB setting")
register_setting = SETTINGS.register


def available_settings() -> list[str]:
    return SETTINGS.names()


def get_setting(name: str, **options: Any) -> Setting:
    return SETTINGS.get(name)(**options)
