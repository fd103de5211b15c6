"""Generated sentences: numbers, dates, times, names, commands and short everyday prompts."""

from __future__ import annotations

import random
from collections.abc import Callable

from app.asr.numbers import (
    MONTHS,
    WEEKDAYS,
    digits_to_words,
    number_to_words,
    ordinal_to_words,
    time_to_words,
    year_to_words,
)

NAMES = [
    "james",
    "mary",
    "john",
    "patricia",
    "robert",
    "jennifer",
    "michael",
    "linda",
    "william",
    "elizabeth",
    "david",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "daniel",
    "nancy",
    "matthew",
    "lisa",
    "anthony",
    "betty",
    "mark",
    "sandra",
    "paul",
    "ashley",
    "steven",
    "emily",
    "andrew",
    "donna",
    "kevin",
    "michelle",
    "brian",
    "carol",
    "george",
    "amanda",
    "edward",
    "anna",
    "peter",
    "alice",
    "henry",
    "grace",
    "jack",
    "lucy",
    "oliver",
    "emma",
    "tom",
    "kate",
    "sam",
    "helen",
]
SURNAMES = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "miller",
    "davis",
    "wilson",
    "anderson",
    "taylor",
    "thomas",
    "moore",
    "martin",
    "jackson",
    "white",
    "harris",
    "clark",
    "lewis",
    "walker",
    "hall",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "green",
    "baker",
    "adams",
    "nelson",
    "hill",
    "campbell",
    "mitchell",
]
PLACES = [
    "london",
    "paris",
    "new york",
    "boston",
    "chicago",
    "berlin",
    "tokyo",
    "beijing",
    "shanghai",
    "madrid",
    "rome",
    "sydney",
    "toronto",
    "dublin",
    "the station",
    "the airport",
    "the office",
    "the park",
    "the library",
    "the hospital",
    "the school",
    "the market",
    "the beach",
    "the museum",
    "home",
]
OBJECTS = [
    "the lights",
    "the music",
    "the radio",
    "the television",
    "the heater",
    "the fan",
    "the alarm",
    "the oven",
    "the camera",
    "the computer",
    "the printer",
    "the door",
    "the window",
    "the kettle",
]
THINGS = [
    "apples",
    "books",
    "chairs",
    "cups of tea",
    "eggs",
    "tickets",
    "letters",
    "oranges",
    "pens",
    "shirts",
    "boxes",
    "flowers",
    "cakes",
    "coins",
    "bottles of water",
    "bags",
    "dogs",
    "cats",
    "birds",
    "trees",
]
PROMPTS = [
    "i would like a cup of coffee please",
    "where is the nearest bus stop",
    "it is raining again today",
    "can you help me with my homework",
    "we are going to the zoo tomorrow",
    "my brother likes to play football",
    "thank you very much for your help",
    "the weather is nice this morning",
    "please close the door behind you",
    "she goes to school by bike",
    "what time does the train leave",
    "i have never seen such a big dog",
    "let's meet after lunch",
    "he is reading a book in the garden",
    "do you know the way to the station",
    "my mother is a teacher",
    "they have lived here for many years",
    "i am sorry i am late",
    "could you speak a little more slowly",
    "the children are playing outside",
]


def _cardinal(rng: random.Random) -> str:
    n = rng.choice([rng.randint(0, 20), rng.randint(21, 99), rng.randint(100, 999), rng.randint(1000, 99999)])
    return rng.choice(
        [
            f"the number is {number_to_words(n)}",
            f"i counted {number_to_words(n)} {rng.choice(THINGS)}",
            f"there are {number_to_words(n)} people waiting",
            f"it costs {number_to_words(n)} dollars",
            f"page {number_to_words(n)}",
            number_to_words(n),
        ]
    )


def _digits(rng: random.Random) -> str:
    length = rng.choice([3, 4, 4, 5, 6, 7, 10])
    digits = "".join(rng.choice("0123456789") for _ in range(length))
    return rng.choice(
        [
            digits_to_words(digits),
            f"my number is {digits_to_words(digits)}",
            f"the code is {digits_to_words(digits)}",
            f"call {digits_to_words(digits)}",
        ]
    )


def _date(rng: random.Random) -> str:
    month, day, year = rng.choice(MONTHS), ordinal_to_words(rng.randint(1, 31)), year_to_words(rng.randint(1900, 2039))
    return rng.choice(
        [
            f"the {day} of {month}",
            f"{month} {day} {year}",
            f"on {rng.choice(WEEKDAYS)} the {day} of {month}",
            f"i was born on the {day} of {month} {year}",
            f"the meeting is on {rng.choice(WEEKDAYS)}",
            f"see you next {rng.choice(WEEKDAYS)}",
            f"it happened in {year}",
        ]
    )


def _time(rng: random.Random) -> str:
    spoken = time_to_words(rng.randint(1, 12), rng.choice([0, 5, 10, 15, 20, 30, 45, rng.randint(1, 59)]))
    return rng.choice(
        [
            f"wake me up at {spoken}",
            f"the train leaves at {spoken}",
            f"it is {spoken}",
            f"set an alarm for {spoken}",
            f"let's meet at {spoken} in the evening",
        ]
    )


def _name(rng: random.Random) -> str:
    first, last, other = rng.choice(NAMES), rng.choice(SURNAMES), rng.choice(NAMES)
    return rng.choice(
        [
            f"my name is {first} {last}",
            f"call {first} {last}",
            f"{first} went to {rng.choice(PLACES)}",
            f"this is {first} speaking",
            f"{first} and {other} are friends",
            f"please send a message to {first}",
            f"{first} {last} lives in {rng.choice(PLACES)}",
        ]
    )


def _command(rng: random.Random) -> str:
    thing, place = rng.choice(OBJECTS), rng.choice(PLACES)
    level = number_to_words(rng.randint(1, 100))
    return rng.choice(
        [
            f"turn on {thing}",
            f"turn off {thing}",
            f"switch off {thing}",
            f"open {thing}",
            f"close {thing}",
            f"set the volume to {level}",
            f"set the temperature to {level} degrees",
            f"navigate to {place}",
            f"how far is it to {place}",
            "stop",
            "play the next song",
            "what is the weather like tomorrow",
            f"remind me to call {rng.choice(NAMES)}",
            "cancel that",
            f"take me to {place}",
        ]
    )


def _prompt(rng: random.Random) -> str:
    return rng.choice(PROMPTS)


GENERATORS: list[tuple[Callable[[random.Random], str], float]] = [
    (_cardinal, 0.2),
    (_digits, 0.2),
    (_date, 0.15),
    (_time, 0.1),
    (_name, 0.15),
    (_command, 0.15),
    (_prompt, 0.05),
]


def generated_sentences(count: int, seed: int) -> list[str]:
    """``count`` distinct generated sentences, reproducible from ``seed``."""
    rng = random.Random(seed)
    funcs = [g for g, _ in GENERATORS]
    weights = [w for _, w in GENERATORS]
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < count and attempts < count * 20:
        attempts += 1
        sentence = " ".join(rng.choices(funcs, weights)[0](rng).split())
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out
