"""The demo task, generated here so the project ships no third-party data.

Structured weather record -> one-sentence forecast.  The sentence pattern
depends on the kind of weather, so the model has to learn a mapping, not one
fixed template; numbers and names must be copied exactly.  The base model
answers with free-form prose of its own, so the fine-tuning gain shows on
perplexity, BLEU and ROUGE alike.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

CITIES = (
    "Oslo", "Lisbon", "Nairobi", "Lima", "Osaka", "Denver", "Cairo", "Dublin", "Perth", "Quebec",
    "Hanoi", "Zurich", "Accra", "Bergen", "Tucson", "Seville", "Kyiv", "Auckland", "Bogota", "Tallinn",
)  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WINDS = ("calm", "light", "moderate", "strong")
# condition -> (range of highs, two sentence patterns).  Which of the two a row
# uses is random, so no model can score a perfect BLEU: the numbers stay honest.
CONDITIONS = {
    "sunny": ((14, 34), (
        "{day} in {city} will be sunny, with a high of {high}°C, a low of {low}°C and {wind} winds.",
        "Sunshine all day in {city} on {day}: {low}°C to {high}°C, {wind} winds.",
    )),
    "partly cloudy": ((8, 28), (
        "{day} in {city} will be partly cloudy, with a high of {high}°C, a low of {low}°C and {wind} winds.",
        "Some clouds over {city} on {day}, from {low}°C up to {high}°C, with {wind} winds.",
    )),
    "light rain": ((4, 22), (
        "Expect light rain in {city} on {day}; temperatures range from {low}°C to {high}°C with {wind} winds.",
        "A few showers in {city} on {day}; take an umbrella, {low}°C to {high}°C and {wind} winds.",
    )),
    "heavy rain": ((4, 22), (
        "Expect heavy rain in {city} on {day}; temperatures range from {low}°C to {high}°C with {wind} winds.",
        "Downpours soak {city} on {day}; {low}°C to {high}°C, {wind} winds, flooding possible.",
    )),
    "thunderstorms": ((16, 32), (
        "Thunderstorms hit {city} on {day}, so stay indoors; it will be {low}°C to {high}°C with {wind} winds.",
        "Storm warning for {city} on {day}: thunder, lightning, {low}°C to {high}°C and {wind} winds.",
    )),
    "snow": ((-8, 3), (
        "{city} gets snow on {day}: a high of {high}°C, a low of {low}°C and {wind} winds.",
        "Snowfall in {city} on {day}, staying between {low}°C and {high}°C with {wind} winds.",
    )),
    "fog": ((2, 14), (
        "Fog covers {city} on {day}; drive carefully, between {low}°C and {high}°C with {wind} winds.",
        "Thick fog in {city} on {day}, {low}°C to {high}°C and {wind} winds; visibility is poor.",
    )),
}  # fmt: skip
INSTRUCTION = "Write a one-sentence weather forecast for this record."


def make_row(rng: random.Random) -> dict[str, str]:
    condition = rng.choice(list(CONDITIONS))
    (lo, hi), patterns = CONDITIONS[condition]
    high = rng.randint(lo, hi)
    fields = {
        "city": rng.choice(CITIES),
        "day": rng.choice(DAYS),
        "sky": condition,
        "high": high,
        "low": high - rng.randint(3, 12),
        "wind": rng.choice(WINDS),
    }
    record = " | ".join(f"{k}: {v}" for k, v in fields.items())
    sentence = rng.choice(patterns).format(**fields)
    return {"prompt": f"{INSTRUCTION}\n{record}", "completion": sentence}


def write_demo_data(folder: str | Path, n_train: int = 480, n_eval: int = 60, seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``eval.jsonl`` (prompt/completion rows); no prompt appears in both."""
    return _write_split(folder, ("train.jsonl", "eval.jsonl"), make_row, n_train, n_eval, seed)


def _write_split(folder: str | Path, names: tuple[str, str], make: Any, n_train: int, n_eval: int, seed: int):
    """``n_train`` + ``n_eval`` rows from ``make(rng)``, one per prompt, into two JSONL files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: dict[str, dict[str, str]] = {}
    while len(rows) < n_train + n_eval:
        row = make(rng)
        rows.setdefault(row["prompt"], row)
    ordered = list(rows.values())
    paths = folder / names[0], folder / names[1]
    for path, part in zip(paths, (ordered[:n_train], ordered[n_train:]), strict=True):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    return paths


# --------------------------------------------------------------------------- the preference demo
# Pairs of forecasts for one record: the preferred one copies the record's temperatures, the other
# gets them wrong.  Whether an answer has the right numbers is checked by `numbers_right`, so the
# demo shows the tuned model doing better at that, not just a falling loss.

RECORD_NUMBER = r"{key}: (-?\d+)"


def make_pair(rng: random.Random) -> dict[str, str]:
    row = make_row(rng)
    fields = dict(part.split(": ", 1) for part in row["prompt"].split("\n", 1)[1].split(" | "))
    high, low = int(fields["high"]), int(fields["low"])
    shift = rng.choice((-1, 1)) * rng.randint(2, 6)
    wrong_high, wrong_low = (low, high) if rng.random() < 0.3 else (high + shift, low - shift)
    rejected = row["completion"].replace(f"{high}°C", "\0H").replace(f"{low}°C", "\0L")
    rejected = rejected.replace("\0H", f"{wrong_high}°C").replace("\0L", f"{wrong_low}°C")
    return {"prompt": row["prompt"], "chosen": row["completion"], "rejected": rejected}


def write_preference_demo(folder: str | Path, n_train: int = 240, n_eval: int = 60, seed: int = 1) -> tuple[Path, Path]:
    """Write ``dpo_train.jsonl`` and ``dpo_eval.jsonl`` (prompt / chosen / rejected); no prompt in both."""
    return _write_split(folder, ("dpo_train.jsonl", "dpo_eval.jsonl"), make_pair, n_train, n_eval, seed)


def numbers_right(prompts: list, completions: list, **_: object) -> list[float]:
    """1.0 where the answer states the record's high and low as written (``28°C``), else 0.0.

    A check with the reward-function signature, so ``eval.checks`` (and GRPO) can use it.
    """
    import re

    from lmtune.data.preference import completion_text

    scores = []
    for prompt, completion in zip(prompts, completions, strict=True):
        text = prompt if isinstance(prompt, str) else completion_text(prompt)
        numbers = [re.search(RECORD_NUMBER.format(key=k), text) for k in ("high", "low")]
        answer = completion_text(completion)
        ok = all(m is not None and f"{m.group(1)}°C" in answer for m in numbers)
        scores.append(1.0 if ok else 0.0)
    return scores
