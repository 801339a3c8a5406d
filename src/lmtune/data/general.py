"""A small general-knowledge set, written for this project, to measure forgetting.

Fine-tuning on one narrow task can cost a model its general ability
(catastrophic forgetting).  Perplexity on these everyday questions and answers,
before and after fine-tuning, is lmtune's forgetting figure; the other half
feeds the regularisers against it (EWC's Fisher information, replay).  Both halves
are built in: ``eval.reference: general`` and ``continual.reference: general-fit``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from lmtune.data.formats import Example, read_examples, to_example
from lmtune.errors import ConfigError

# ruff: noqa: E501 - one question and answer per line reads best

QA = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are in a week?", "A week has seven days."),
    ("What do bees make?", "Bees make honey and wax."),
    ("Why do we see lightning before we hear thunder?", "Light travels much faster than sound, so the flash reaches us first."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("Name the largest planet in our solar system.", "Jupiter is the largest planet in our solar system."),
    ("What gas do plants take in from the air?", "Plants take in carbon dioxide and release oxygen."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is the opposite of 'ancient'?", "The opposite of ancient is modern."),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("Give a synonym for 'happy'.", "A synonym for happy is cheerful."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the main language spoken in Brazil?", "The main language spoken in Brazil is Portuguese."),
    ("What organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("Translate 'thank you' into Spanish.", "Thank you in Spanish is gracias."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("Why do we have seasons?", "Earth's axis is tilted, so each hemisphere gets more or less sunlight through the year."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("Which animal is known as the king of the jungle?", "The lion is known as the king of the jungle."),
    ("What is a haiku?", "A haiku is a short poem of three lines with five, seven and five syllables."),
    ("How many minutes are in an hour?", "An hour has sixty minutes."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa."),
    ("What do you call a baby cat?", "A baby cat is called a kitten."),
    ("Summarise the water cycle in one sentence.", "Water evaporates, condenses into clouds and falls back as rain or snow."),
    ("What is the past tense of 'run'?", "The past tense of run is ran."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet."),
    ("What is photosynthesis?", "Photosynthesis is how plants use sunlight to turn water and carbon dioxide into sugar."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What currency is used in Japan?", "Japan uses the yen."),
    ("What is the tallest mountain on Earth?", "Mount Everest is the tallest mountain on Earth."),
    ("Give an example of a mammal that can fly.", "The bat is a mammal that can fly."),
    ("What is 15 percent of 200?", "15 percent of 200 is 30."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the plural of 'mouse'?", "The plural of mouse is mice."),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light, so the sky looks blue."),
    ("How many hours are in a day?", "A day has twenty-four hours."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("What is the largest desert in the world?", "Antarctica is the largest desert; the Sahara is the largest hot desert."),
    ("What instrument has 88 keys?", "A standard piano has 88 keys."),
    ("How do you greet someone politely in English?", "You can say 'Good morning, how are you?'"),
    ("What is the speed of light, roughly?", "Light travels at about 300,000 kilometres per second."),
    ("What is a noun?", "A noun is a word that names a person, place or thing."),
)  # fmt: skip


# Names ``eval.reference`` / ``continual.reference`` accept besides a file: the two disjoint halves,
# so a config needs no data file to report forgetting (and the regularisers never see the measure's rows).
BUILTIN = {"general": 1, "general-fit": 0}
"""name -> which half of ``QA``: ``general`` measures forgetting, ``general-fit`` feeds EWC / replay."""


def general_rows(name: str) -> list[dict[str, str]]:
    return [{"prompt": q, "completion": a} for q, a in QA[BUILTIN[name] :: 2]]


def check_reference(key: str, value: str | None) -> None:
    """A reference is a built-in name or an existing file; anything else is a one-line error."""
    if value and value not in BUILTIN and not Path(value).is_file():
        raise ConfigError(
            f"{key}: {value}: no such file (relative paths start from the current folder); "
            f"or name lmtune's built-in general-knowledge set: {' | '.join(BUILTIN)}"
        )


def reference_examples(value: str) -> list[Example]:
    """The examples of a built-in set or of a data file."""
    if value in BUILTIN:
        return [replace(to_example(r, "prompt_completion"), task=value) for r in general_rows(value)]
    return read_examples(value).examples


def write_general_data(folder: str | Path) -> tuple[Path, Path]:
    """``general_fit.jsonl`` (for EWC / replay) and ``general_eval.jsonl`` (the forgetting measure), disjoint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "general_fit.jsonl", folder / "general_eval.jsonl"
    for path, name in zip(paths, ("general-fit", "general"), strict=True):
        rows = general_rows(name)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return paths


def reference_rows(encoder: Any, reference: str | None) -> list[dict[str, Any]]:
    """The tokenised rows of ``eval.reference`` / ``continual.reference`` (none when it is unset)."""
    return [encoder.encode(ex) for ex in reference_examples(reference)] if reference else []
