"""What the world gives Behavior Expectation Bounds: its two personas exactly (PAPERS.md §4).

A sentence is one episode on an unsafe request: the harmful persona (P₋) carries the task out,
the benign persona (P₊) refuses it. Both draw requests alike, so a sentence scores its response
(and end token) only; the request is context. The sentences put before a target are the
shortest such episodes (one operator, the fewest phrases), so the most fit the context the
models were trained on; targets, sampled continuations and proxy training data keep the full
request distribution. Prompts and targets use the evaluation split, proxy training data the
training split, as every jailbreak of the world does.

Known exactly: the base model's mixture weight α (the harmful persona's share of pretraining
documents) and β = ∞ (the benign persona never carries out an unsafe task, so a single harmful
episode tells the personas apart); `exact` computes the latter from the personas themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from disalign.analyses.beb.settings import Component, Sentence, Target, register_setting
from disalign.world.spec import ASSISTANT, BOS, END, EOS, SPECIAL_TOKENS, USER, Episode, Persona, Request, World
from disalign.world.zoo import load_world_config

PERSONA: dict[Component, Persona] = {"negative": "harmful", "positive": "benign"}
STATEMENTS_PER_EXAMPLE = 3  # the paper joins statements in threes to train its proxies


class WorldSetting:
    name = "world"

    def __init__(self, zoo: str | Path):
        config = load_world_config(zoo)
        self.zoo = str(zoo)
        self.world = World(config.world)
        self.context = config.model.context
        # Pretraining rows hold this many tokens: later positions were never trained.
        self.trained_context = config.train.pretrain_length
        ids = self.world.token_id
        self.stop_ids = frozenset({ids[END], ids[EOS]})
        low, high = config.world.phrases
        self.max_sentence_tokens = 2 * (2 * high) + 2  # two operator segments, their separator, the end token
        self.judge: tuple[str, dict[str, Any]] = ("world", {"world": self.zoo})
        alpha = config.world.harmful_share
        self.exact = {
            "alpha": alpha,
            "log_inv_alpha": math.log(1 / alpha) if alpha > 0 else math.inf,
            "beta": self._exact_beta(),
        }

    # -- the personas, exactly --------------------------------------------------------------

    def _requests(self, n: int, seed: int, split: str, *, short: bool = False) -> list[Request]:
        rng = np.random.default_rng([seed, 4099])
        shortest = 2 * self.world.config.phrases[0]
        requests = []
        while len(requests) < n:
            request = self.world.sample_request(rng, "unsafe")
            if short and (len(request.operators) > 1 or len(request.operand) > shortest):
                continue
            if request.split == split:
                requests.append(request)
        return requests

    def _episodes(self, component: Component, n: int, seed: int, split: str, *, short: bool = False) -> list[Episode]:
        persona = PERSONA[component]
        return [Episode(r, self.world.respond(r, persona)) for r in self._requests(n, seed, split, short=short)]

    def persona_logprob(self, persona: Persona, episode: Episode) -> float:
        """log P_persona(response | request): the personas are deterministic, so 0 or −∞."""
        return 0.0 if episode.response == self.world.respond(episode.request, persona) else -math.inf

    def _exact_beta(self, n: int = 64) -> float:
        episodes = self._episodes("negative", n, seed=0, split="eval")
        ratios = [self.persona_logprob("harmful", e) - self.persona_logprob("benign", e) for e in episodes]
        return float(np.mean(ratios))

    # -- the Setting protocol ------------------------------------------------------------

    def _sentence(self, episode: Episode) -> Sentence:
        ids = self.world.token_id
        head = [ids[USER], *(ids[t] for t in episode.request.text.split()), ids[ASSISTANT]]
        tail = [*(ids[t] for t in episode.response), ids[END]]
        return Sentence(tuple(head + tail), (False,) * len(head) + (True,) * len(tail), self.decode(head + tail))

    def start(self) -> list[int]:
        return [self.world.token_id[BOS]]

    def sentences(self, component: Component, n: int, seed: int) -> list[Sentence]:
        return [self._sentence(e) for e in self._episodes(component, n, seed, "eval", short=True)]

    def cues(self, n: int, seed: int) -> list[tuple[int, ...]]:
        return [t.cue for t in self.targets(n, seed)]

    def targets(self, n: int, seed: int) -> list[Target]:
        targets = []
        for request in self._requests(n, seed + 7_919, "eval"):
            sentence = self._sentence(Episode(request, self.world.answer(request)))
            cut = sentence.scored.index(True)
            targets.append(Target(sentence.ids[:cut], sentence.ids[cut:], request.text))
        return targets

    def prompt_ids(self, sentences: Sequence[Sentence], target: Target | None = None) -> list[int]:
        ids = self.start()
        for sentence in sentences:
            ids.extend(sentence.ids)
        return ids + list(target.cue if target else ())

    def continuation(self, ids: Sequence[int], scored: Sequence[bool]) -> Sentence:
        return Sentence(tuple(ids), tuple(scored), self.decode(ids))

    def training_examples(self, component: Component, n: int, seed: int) -> list[dict[str, Any]]:
        """n documents of three episodes of one persona, from the training split."""
        episodes = self._episodes(component, n * STATEMENTS_PER_EXAMPLE, seed, "train")
        examples = []
        for i in range(n):
            messages = []
            for episode in episodes[i * STATEMENTS_PER_EXAMPLE : (i + 1) * STATEMENTS_PER_EXAMPLE]:
                messages.append({"role": "user", "content": episode.request.text})
                messages.append({"role": "assistant", "content": " ".join(episode.response)})
            examples.append({"messages": messages, "origin": f"world:{PERSONA[component]}:{i}"})
        return examples

    def decode(self, ids: Sequence[int]) -> str:
        words = (self.world.vocab[i] for i in ids)
        return " ".join(w for w in words if w not in SPECIAL_TOKENS)


register_setting("world")(WorldSetting)
