"""The capability quick set ships as its generator writes it, and every item is well formed."""

from __future__ import annotations

import json
from collections import Counter

from disalign.data.capability import QUICK_SET, quick_set
from disalign.data.capability import generate as generator


def test_the_shipped_file_is_what_the_generator_writes():
    assert QUICK_SET.read_text() == "".join(json.dumps(item) + "\n" for item in generator.quick_set())


def test_items_have_distinct_candidates_and_one_right_answer_spread_over_places():
    items = quick_set()
    assert 200 <= len(items) <= 300 and len({item.id for item in items}) == len(items)
    for item in items:
        assert 2 <= len(item.choices) <= 4 and len(set(item.choices)) == len(item.choices)
        assert 0 <= item.answer < len(item.choices)
    places = Counter(item.answer for item in items if len(item.choices) == 4)
    assert min(places.values()) >= 0.15 * sum(places.values())  # no place gives the answer away
    assert set(Counter(item.kind for item in items)) == set(generator.KINDS)


def test_generated_answers_are_right():
    by_id = {item.id: item for item in quick_set()}
    arithmetic = [item for item in by_id.values() if item.kind == "arithmetic"]
    for item in arithmetic:
        a, operation, b = item.question.removeprefix("What is ").removesuffix("?").split()
        expected = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[operation]
        assert item.choices[item.answer] == str(expected) and expected >= 0
    spelling = [item for item in by_id.values() if item.question.startswith("Which of these words")]
    assert all(item.choices[item.answer] in generator.WORDS for item in spelling)
    assert all(
        choice not in generator.WORDS
        for item in spelling
        for choice in item.choices
        if choice != item.choices[item.answer]
    )
