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
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: dict[str, dict[str, str]] = {}
    while len(rows) < n_train + n_eval:
        row = make_row(rng)
        rows.setdefault(row["prompt"], row)
    ordered = list(rows.values())
    paths = folder / "train.jsonl", folder / "eval.jsonl"
    for path, part in zip(paths, (ordered[:n_train], ordered[n_train:]), strict=True):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    return paths
