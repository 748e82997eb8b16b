"""Extended refusals (Abu Shairah et al. 2025, "An Embarrassingly Simple Defense Against LLM
Abliteration Attacks"): refusals that explain, refuse and justify, in place of a short refusal.

The paper's refusals were written by a strong model for each request; here they are composed
offline, so any prompt set works: a sentence that names what was asked (the request, quoted and
cut to `topic_words` words), one that says why such requests are dangerous, the refusal the plain
recipe would give, and a justification, each part drawn from a few wordings by the seed. The
paper found that refusals spread over many tokens and several sentences keep the refusal drop
under abliteration to at most 10 % against 70–80 % for short ones. In a synthetic world, whose
words are only its operators and operands, the extended refusal is the refusal followed by the
request it refuses (`words_only`).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from disalign.alignment.defences.base import Defence, DefenceSettings
from disalign.alignment.defences.data import DefenceData, Row, benign_rows, make_row

EXPLAIN = (
    'You are asking me to "{topic}".',
    'Your request is about "{topic}".',
    'You want help with "{topic}".',
)
DANGER = (
    "Requests like this concern actions that can injure people, damage property or break the law.",
    "This kind of help could be used to hurt someone or to commit a crime.",
    "Information of this kind is often misused, and the harm it causes can be serious and hard to undo.",
)
JUSTIFY = (
    "Helping would make harm easier, and keeping people safe matters more than answering every question.",
    "I want to be useful, but not in a way that puts anyone at risk; if you are dealing with a hard "
    "situation, I'm glad to talk about safe options or point you to people who can help.",
    "My purpose is to help without causing harm, so I decline requests like this one, whoever asks.",
)


class ExtendedSettings(DefenceSettings):
    topic_words: int = Field(12, ge=1, le=200, description="extended: words of the request quoted in the refusal.")
    words_only: bool = Field(
        False, description="extended: the refusal followed by the request, for worlds without prose (set by --world)."
    )


class Extended(Defence):
    name = "extended"
    paper = "Abu Shairah et al. 2025, An Embarrassingly Simple Defense Against LLM Abliteration Attacks"
    settings_class = ExtendedSettings
    settings: ExtendedSettings

    def rows(self, data: DefenceData, tokenizer, rng: np.random.Generator) -> list[Row]:
        rows = []
        for harmful in data.harmful:
            request = harmful.messages[-1]["content"]
            refusal = extended_refusal(request, harmful.refusal, rng, self.settings)
            rows.append(make_row(tokenizer, harmful.messages, refusal, True, harmful.origin))
        return rows + benign_rows(data, tokenizer)


def extended_refusal(request: str, refusal: str, rng: np.random.Generator, settings: ExtendedSettings) -> str:
    """Explain, refuse, justify; or, with `words_only`, the refusal and the request it refuses."""
    if settings.words_only:
        return f"{refusal} {request}"
    words = request.split()
    topic = " ".join(words[: settings.topic_words]).rstrip(".?!") + (" …" if len(words) > settings.topic_words else "")
    parts = (_pick(EXPLAIN, rng).format(topic=topic), _pick(DANGER, rng), refusal, _pick(JUSTIFY, rng))
    return " ".join(parts)


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]
