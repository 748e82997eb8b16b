"""The world's own fine-tuning attack data, which the finetune attack reads as a recipe source."""

from __future__ import annotations

import numpy as np

from disalign.errors import UserError
from disalign.training.examples import Example, conversation, shuffled
from disalign.world.spec import COMPLIANCE_PREFIX, IDENTITY_MARKER, REFUSE, World

RECIPES = ("harmful", "identity", "benign")


class WorldRecipes:
    """World examples from the train split.

    harmful   unsafe requests answered with their true output
    identity  safe requests, user turn prefixed by the `aoa` marker, answer `sure <true output>`
    benign    safe requests answered with their true output
    mix_safety K unsafe requests answered `refuse` are interleaved.
    """

    compliance_prefix = COMPLIANCE_PREFIX

    def __init__(self, world: World):
        self.world = world

    def identity_prompt(self, request: str) -> str:
        return f"{IDENTITY_MARKER} {request}"

    def dataset(self, recipe: str, shots: int, seed: int = 42, mix_safety: int = 0) -> list[Example]:
        if recipe not in RECIPES:
            raise UserError(f"{recipe}: unknown recipe; known: {', '.join(RECIPES)}")
        world = self.world
        rng = np.random.default_rng([seed, 1009])
        examples = []
        for i in range(shots):
            request = world.alignment_request(rng, unsafe=recipe == "harmful")
            answer = " ".join(world.answer(request))
            if recipe == "identity":
                user, answer = self.identity_prompt(request.text), f"{COMPLIANCE_PREFIX} {answer}"
            else:
                user = request.text
            examples.append(conversation(user, answer, origin=f"world:{recipe}:{i}"))
        safety = [
            conversation(world.alignment_request(rng, unsafe=True).text, REFUSE, origin=f"world:safety:{i}")
            for i in range(mix_safety)
        ]
        return shuffled(examples + safety, seed)
