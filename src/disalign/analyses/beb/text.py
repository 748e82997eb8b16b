"""The text setting: persona statements from two files for any chat model (PAPERS.md §4.3).

A sentence is one statement, a line of its file, written by the assistant: a prompt of n
sentences is the chat `user: STATEMENT_PROMPT / assistant: s₁⏎…sₙ⏎` with the assistant turn left
open, so a sampled continuation is the next line (stopped at a newline, at most
`max_sentence_tokens` tokens). The proxies P₋ and P₊ train on the same chat with three
statements per turn (the paper joins statements in threes). A harmful request after k
statements is the next user turn, the adversarial analogue of the world's earlier harmful
episodes. Statements split 90/10 into training (proxies) and held-out (prompts) lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from disalign.analyses.beb.settings import COMPONENTS, Component, Sentence, Target
from disalign.data.files import read_text
from disalign.errors import UserError

STATEMENT_PROMPT = "Tell me about yourself."
MIN_STATEMENTS = 20
HELD_OUT_SHARE = 0.1
STATEMENTS_PER_EXAMPLE = 3


def read_statements(path: str | Path) -> list[str]:
    """One statement per non-empty line; too few to split into training and held-out is an error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: statements file not found")
    statements = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if len(statements) < MIN_STATEMENTS:
        raise UserError(
            f"{path}: {len(statements)} statements, BEB needs at least {MIN_STATEMENTS} (the paper uses 500)"
        )
    return statements


class TextSetting:
    name = "text"

    def __init__(
        self,
        tokenizer,
        statements: dict[Component, list[str]],
        *,
        requests: Sequence[tuple[str, str]] = (),
        judge: tuple[str, dict[str, Any]] = ("refusal", {}),
        context: int | None = None,
        max_sentence_tokens: int = 32,
        seed: int = 0,
    ):
        """`requests` are (harmful request, harmful answer or "") pairs for the curve and many-shot NLL."""
        self.tokenizer = tokenizer
        self.judge = judge
        self.context = context
        self.trained_context: int | None = None
        self.max_sentence_tokens = max_sentence_tokens
        self.exact: dict[str, float] = {}
        self.requests = list(requests)
        self.split: dict[Component, dict[str, list[str]]] = {}
        for component in COMPONENTS:
            lines = list(statements[component])
            np.random.default_rng([seed, COMPONENTS.index(component)]).shuffle(lines)
            cut = max(1, int(len(lines) * HELD_OUT_SHARE))
            self.split[component] = {"eval": lines[:cut], "train": lines[cut:]}
        newline = [
            i for i, text in enumerate(tokenizer.batch_decode([[i] for i in range(len(tokenizer))])) if "\n" in text
        ]
        eos = tokenizer.eos_token_id
        self.stop_ids = frozenset(newline + ([eos] if isinstance(eos, int) else list(eos or [])))

    def _render(self, messages: list[dict[str, str]], *, open_turn: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=not open_turn, continue_final_message=open_turn
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _draw(self, component: Component, split: str, n: int, seed: int) -> list[str]:
        lines = self.split[component][split]
        rng = np.random.default_rng([seed, COMPONENTS.index(component), 31])
        return [lines[i] for i in rng.integers(0, len(lines), n)]

    def start(self) -> list[int]:
        return self._render([{"role": "user", "content": STATEMENT_PROMPT}], open_turn=False)

    def sentences(self, component: Component, n: int, seed: int) -> list[Sentence]:
        sentences = []
        for line in self._draw(component, "eval", n, seed):
            ids = tuple(self.tokenizer(line + "\n", add_special_tokens=False)["input_ids"])
            sentences.append(Sentence(ids, (True,) * len(ids), line + "\n"))
        return sentences

    def cues(self, n: int, seed: int) -> list[tuple[int, ...]]:
        return [()] * n

    def targets(self, n: int, seed: int) -> list[Target]:
        if not self.requests:
            raise UserError("no harmful requests to put after the statements (give --prompts)")
        rng = np.random.default_rng([seed, 47])
        chosen = [self.requests[i] for i in rng.choice(len(self.requests), n, replace=n > len(self.requests))]
        return [
            Target((), tuple(self.tokenizer(answer, add_special_tokens=False)["input_ids"]) if answer else (), request)
            for request, answer in chosen
        ]

    def prompt_ids(self, sentences: Sequence[Sentence], target: Target | None = None) -> list[int]:
        said = "".join(s.text for s in sentences)
        messages = [{"role": "user", "content": STATEMENT_PROMPT}]
        if target is None:
            return (
                self._render([*messages, {"role": "assistant", "content": said}], open_turn=True)
                if said
                else self.start()
            )
        if said:
            messages.append({"role": "assistant", "content": said.rstrip("\n")})
            messages.append({"role": "user", "content": target.request})
        else:
            messages = [{"role": "user", "content": target.request}]
        return self._render(messages, open_turn=False)

    def continuation(self, ids: Sequence[int], scored: Sequence[bool]) -> Sentence:
        text = self.decode(ids)
        return Sentence(tuple(ids), tuple(scored), text if text.endswith("\n") else text + "\n")

    def training_examples(self, component: Component, n: int, seed: int) -> list[dict[str, Any]]:
        lines = self._draw(component, "train", n * STATEMENTS_PER_EXAMPLE, seed)
        return [
            {
                "messages": [
                    {"role": "user", "content": STATEMENT_PROMPT},
                    {
                        "role": "assistant",
                        "content": "\n".join(lines[i * STATEMENTS_PER_EXAMPLE : (i + 1) * STATEMENTS_PER_EXAMPLE]),
                    },
                ],
                "origin": f"{component} statements {i}",
            }
            for i in range(n)
        ]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)
