"""Story-like text made in the test, so the BPE tests need no corpus outside the repo (a fresh clone has none).

    from story_grammar import stories
    text = stories(120_000)   # ~120 KB: the same text on every machine and every run

A seeded grammar of TinyStories-style sentences: a few hundred words (a 512-token BPE fills its vocab), curly quotes,
dashes, accented names (multi-byte UTF-8), stories separated by <|endoftext|> lines as scripts/data.py writes them.
"""
import random

NAMES = ("Lily Tom Mia Ben Sam Anna Max Zoe Rosa Pip Leo Ella Finn Ruby Jack Nora Theo Ivy Owen Lucy Hugo Maya "
         "Noah Chloé Zoé René Amélie Élodie Kai Tess Milo Lena Otto Gus Bea Cleo Rex Luna Toby Daisy").split()
ANIMALS = "cat dog bird frog duck bunny fox bear mouse owl puppy kitten turtle fish lamb pony".split()
THINGS = ("ball kite box hat cake book toy boat drum shell coin stone flower leaf apple crayon blanket cup spoon "
          "train robot balloon rope key map jar bell sock basket feather button lamp").split()
PLACES = ("park garden forest beach pond hill house kitchen school yard barn river meadow shop tree café "
          "playground cave bridge field").split()
ADJS = ("big little red blue green shiny soft happy sad brave kind funny tiny old new warm cold quiet loud "
        "yellow fluffy bright silly sleepy gentle curious").split()
FEELS = "happy sad proud scared excited tired angry surprised calm glad lonely curious".split()
VERBS = ("found saw liked wanted shared lost dropped painted hugged carried chased made fixed washed hid opened "
         "pushed pulled threw caught kept gave").split()
MOVES = "ran walked jumped skipped hopped danced climbed raced crawled swam".split()
SAYS = "said asked shouted whispered laughed cried replied".split()
TIMES = ("One day", "Once upon a time", "In the morning", "After lunch", "That night", "Later", "The next day",
         "At the end of the week", "Every day", "Soon")


def _sentence(rng, hero, pal):
    a, t, p = rng.choice(ADJS), rng.choice(THINGS), rng.choice(PLACES)
    forms = (
        lambda: f"{rng.choice(TIMES)}, {hero} {rng.choice(VERBS)} a {a} {t} in the {p}.",
        lambda: f"{hero} {rng.choice(MOVES)} to the {p} with {pal}.",
        lambda: f"{hero} felt {rng.choice(FEELS)} because the {t} was so {a}.",
        lambda: f"“Look at the {a} {t}!” {hero} {rng.choice(SAYS)}.",
        lambda: f"“Can we play in the {p}?” {pal} {rng.choice(SAYS)}. “Yes, let’s go!”",
        lambda: f"{pal}’s {rng.choice(ANIMALS)} {rng.choice(MOVES)} after the {t} — and {rng.choice(VERBS)} it!",
        lambda: f"They {rng.choice(VERBS)} {rng.randint(2, 12)} {t}s and put them in a {a} basket.",
        lambda: f"{hero} was {rng.choice(FEELS)}, but {pal} {rng.choice(VERBS)} the {t} and smiled.",
    )
    return rng.choice(forms)()


def stories(n_chars, seed=0):
    """At least n_chars characters of stories, each ended by '\\n<|endoftext|>\\n'; deterministic in (n_chars, seed)."""
    rng, out, size = random.Random(seed), [], 0
    while size < n_chars:
        hero, pal = rng.sample(NAMES, 2)
        opening = (f"Once upon a time, there was a {rng.choice(ADJS)} {rng.choice(ANIMALS)} named {hero}. "
                   f"{hero} lived near a {rng.choice(PLACES)} with {pal}.")
        lines = [opening] + [" ".join(_sentence(rng, hero, pal) for _ in range(rng.randint(2, 4)))
                             for _ in range(rng.randint(1, 3))]
        lines.append(f"In the end, {hero} and {pal} were {rng.choice(FEELS)}. The {rng.choice(THINGS)} stayed with them.")
        story = "\n".join(lines) + "\n<|endoftext|>\n"
        out.append(story)
        size += len(story)
    return "".join(out)
