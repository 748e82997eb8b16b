"""Writes quick.jsonl, the capability quick set: `python -m disalign.data.capability.generate`.

Every item but the hand-written facts is computed here from a seeded generator, so its answer is
checked by the code that wrote it (README.md in this folder has the rules). Running it again
writes the same file, byte for byte; a test holds the shipped file to that.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

SEED = 28
QUICK_SET = Path(__file__).with_name("quick.jsonl")

Item = dict  # {"id", "kind", "question", "choices", "answer"}

# Short, common words that SmolLM2's tokenizer and a child both know.
WORDS = """apple house river table green water bread chair light music paper money horse cloud
garden winter summer window school friend mother father orange yellow purple animal doctor
pencil letter market forest island bottle finger monkey rabbit turtle dragon castle rocket""".split()
NAMES = ["Anna", "Ben", "Carl", "Dora", "Emma", "Fred", "Gina", "Hugo", "Iris", "Jack"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]  # fmt: skip
# (bigger unit, smaller unit, how many of the smaller make one bigger)
UNITS = [
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("metres", "centimetres", 100),
    ("kilometres", "metres", 1000),
    ("kilograms", "grams", 1000),
    ("years", "months", 12),
    ("dozens", "eggs", 12),
]

# Written by hand: facts a schoolchild knows, each with three wrong answers of the same kind.
FACTS = [
    ("What is the capital of France?", "Paris", ["London", "Rome", "Berlin"]),
    ("What is the capital of Japan?", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
    ("What is the capital of Italy?", "Rome", ["Madrid", "Paris", "Vienna"]),
    ("What is the capital of Germany?", "Berlin", ["Munich", "Vienna", "Zurich"]),
    ("What is the capital of Spain?", "Madrid", ["Lisbon", "Barcelona", "Rome"]),
    ("What is the capital of the United Kingdom?", "London", ["Dublin", "Paris", "Edinburgh"]),
    ("What colour is the sky on a clear day?", "blue", ["green", "red", "brown"]),
    ("What colour is grass?", "green", ["blue", "purple", "orange"]),
    ("What colour is snow?", "white", ["black", "green", "red"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("How many legs does a dog have?", "four", ["two", "six", "eight"]),
    ("How many legs does an insect have?", "six", ["four", "eight", "ten"]),
    ("How many days are in a week?", "seven", ["five", "six", "ten"]),
    ("How many months are in a year?", "twelve", ["ten", "eleven", "fourteen"]),
    ("How many continents are there on Earth?", "seven", ["five", "six", "nine"]),
    ("At what temperature in degrees Celsius does water freeze?", "0", ["10", "32", "100"]),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100", ["50", "80", "212"]),
    ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Jupiter"]),
    ("Which planet is the largest in our solar system?", "Jupiter", ["Mars", "Earth", "Venus"]),
    ("Which planet do we live on?", "Earth", ["Mars", "Venus", "Saturn"]),
    ("What gas do plants take in from the air to make food?", "carbon dioxide", ["oxygen", "helium", "neon"]),
    ("What gas do humans need to breathe to live?", "oxygen", ["helium", "carbon dioxide", "neon"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "salt"]),
    ("Which animal is known as the king of the jungle?", "lion", ["mouse", "rabbit", "sheep"]),
    ("Which animal gives us wool?", "sheep", ["cow", "pig", "horse"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("Which ocean is the largest?", "Pacific", ["Atlantic", "Indian", "Arctic"]),
    ("Who wrote Romeo and Juliet?", "William Shakespeare", ["Charles Dickens", "Mark Twain", "Jane Austen"]),
    ("What is the opposite of hot?", "cold", ["warm", "big", "loud"]),
    ("What is the opposite of up?", "down", ["left", "over", "high"]),
    ("What is the opposite of day?", "night", ["noon", "week", "sun"]),
    ("What is the largest mammal on Earth?", "blue whale", ["elephant", "giraffe", "horse"]),
    ("How many hours are in a day?", "24", ["12", "20", "30"]),
    ("What shape has three sides?", "triangle", ["square", "circle", "pentagon"]),
    ("What shape has four equal sides and four right angles?", "square", ["triangle", "circle", "hexagon"]),
    ("Which season comes after winter?", "spring", ["autumn", "summer", "fall"]),
    ("What is the chemical symbol for water?", "H2O", ["CO2", "O2", "NaCl"]),
    ("Which organ pumps blood through the body?", "heart", ["lung", "liver", "brain"]),
    ("What do you call a baby cat?", "kitten", ["puppy", "calf", "foal"]),
    ("What do you call a baby dog?", "puppy", ["kitten", "lamb", "chick"]),
]


def arithmetic(rng: random.Random) -> Iterator[Item]:
    for index in range(50):
        operation = ("+", "-", "*")[index % 3]
        if operation == "*":
            a, b = rng.randint(2, 12), rng.randint(2, 9)
        else:
            a, b = sorted((rng.randint(10, 99), rng.randint(2, 49)), reverse=True)  # no negative answers
        answer = {"+": a + b, "-": a - b, "*": a * b}[operation]
        wrong = {answer + 1, answer - 1, answer + 10, answer - 10, answer + 2}
        wrong.discard(answer)
        yield numbers(f"What is {a} {operation} {b}?", answer, rng.sample(sorted(wrong), 3), rng)


def letters(rng: random.Random) -> Iterator[Item]:
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    for word in rng.sample(WORDS, 12):
        yield choice(f"What is the first letter of the word '{word}'?", word[0], letters_but(word[0], rng), rng)
    for word in rng.sample(WORDS, 12):
        yield choice(f"What is the last letter of the word '{word}'?", word[-1], letters_but(word[-1], rng), rng)
    for word in rng.sample(WORDS, 12):
        wrong = rng.sample(sorted({len(word) - 2, len(word) - 1, len(word) + 1, len(word) + 2}), 3)
        yield numbers(f"How many letters are in the word '{word}'?", len(word), wrong, rng)
    for word in rng.sample(WORDS, 14):
        yield choice("Which of these words is spelled correctly?", word, misspellings(word, rng), rng)
    for letter in rng.sample(alphabet[:-1], 10):
        following = alphabet[alphabet.index(letter) + 1]
        wrong = [c for c in rng.sample(alphabet, 6) if c not in (following, letter)][:3]
        yield choice(f"Which letter comes right after '{letter}' in the alphabet?", following, wrong, rng)


def comparisons(rng: random.Random) -> Iterator[Item]:
    for _ in range(15):
        a, b = rng.sample(range(10, 1000), 2)
        yield choice(f"Which number is larger: {a} or {b}?", str(max(a, b)), [str(min(a, b))], rng)
    for _ in range(10):
        a, b = rng.sample(range(10, 1000), 2)
        yield choice(f"Which number is smaller: {a} or {b}?", str(min(a, b)), [str(max(a, b))], rng)
    for _ in range(10):
        a, b = rng.sample(WORDS, 2)
        yield choice(f"Which word comes first in alphabetical order: {a} or {b}?", min(a, b), [max(a, b)], rng)


def units(rng: random.Random) -> Iterator[Item]:
    for index in range(30):
        bigger, smaller, factor = UNITS[index % len(UNITS)]
        count = rng.randint(2, 9)
        answer = count * factor
        wrong = sorted({(count + 1) * factor, (count - 1) * factor, count * 10, count + factor} - {answer})
        yield numbers(f"How many {smaller} are in {count} {bigger}?", answer, rng.sample(wrong, 3), rng)


def reasoning(rng: random.Random) -> Iterator[Item]:
    for _ in range(10):
        tallest, middle, shortest = rng.sample(NAMES, 3)
        question = f"{tallest} is taller than {middle}. {middle} is taller than {shortest}. Who is the shortest?"
        yield choice(question, shortest, [tallest, middle], rng)
    for _ in range(10):
        steps = rng.randint(1, 3)
        today = rng.randrange(7)
        later = DAYS[(today + steps) % 7]
        wording = {1: "tomorrow", 2: "the day after tomorrow", 3: "in three days"}[steps]
        wrong = rng.sample([d for d in DAYS if d != later], 3)
        yield choice(f"If today is {DAYS[today]}, what day is it {wording}?", later, wrong, rng)
    for _ in range(10):
        start, step = rng.randint(1, 20), rng.randint(2, 9)
        sequence = [start + step * i for i in range(4)]
        answer = start + step * 4
        wrong = rng.sample(sorted({answer + 1, answer - 1, answer + step, answer - step} - {answer}), 3)
        shown = ", ".join(map(str, sequence))
        yield numbers(f"What number comes next in the sequence {shown}, ...?", answer, wrong, rng)
    for _ in range(5):
        month = rng.randrange(12)
        wrong = rng.sample([m for m in MONTHS if m != MONTHS[(month + 1) % 12]], 3)
        yield choice(f"Which month comes right after {MONTHS[month]}?", MONTHS[(month + 1) % 12], wrong, rng)


def facts(rng: random.Random) -> Iterator[Item]:
    for question, answer, wrong in FACTS:
        yield choice(question, answer, wrong, rng)


def letters_but(letter: str, rng: random.Random) -> list[str]:
    return rng.sample([c for c in "abcdefghijklmnopqrstuvwxyz" if c != letter], 3)


def misspellings(word: str, rng: random.Random) -> list[str]:
    """Three wrong spellings: two neighbouring letters swapped, a letter doubled, a letter dropped."""
    wrong = set()
    while len(wrong) < 3:
        position = rng.randrange(1, len(word) - 1)
        edit = rng.choice(("swap", "double", "drop"))
        if edit == "swap":
            candidate = word[:position] + word[position + 1] + word[position] + word[position + 2 :]
        elif edit == "double":
            candidate = word[: position + 1] + word[position] + word[position + 1 :]
        else:
            candidate = word[:position] + word[position + 1 :]
        if candidate != word:
            wrong.add(candidate)
    return sorted(wrong)


def numbers(question: str, answer: int, wrong: list[int], rng: random.Random) -> Item:
    return choice(question, str(answer), [str(w) for w in wrong], rng)


def choice(question: str, answer: str, wrong: list[str], rng: random.Random) -> Item:
    """One item, its right answer at a random place among the candidates."""
    if answer in wrong or len(set(wrong)) != len(wrong):
        raise ValueError(f"{question}: candidates {[answer, *wrong]} are not distinct")
    choices = list(wrong)
    position = rng.randint(0, len(choices))
    choices.insert(position, answer)
    return {"question": question, "choices": choices, "answer": position}


KINDS: dict[str, Callable[[random.Random], Iterator[Item]]] = {
    "arithmetic": arithmetic,
    "letters": letters,
    "comparison": comparisons,
    "units": units,
    "reasoning": reasoning,
    "facts": facts,
}


def quick_set() -> list[Item]:
    rng = random.Random(SEED)
    items = []
    for kind, make in KINDS.items():
        for index, item in enumerate(make(rng)):
            items.append({"id": f"{kind}-{index:03d}", "kind": kind, **item})
    return items


def main() -> None:
    QUICK_SET.write_text("".join(json.dumps(item) + "\n" for item in quick_set()))


if __name__ == "__main__":
    main()
