"""The world's vocabulary: every word of its texts, for the tiny model's tokenizer.

It sits above the modules whose words it gathers (prompts, layout, edits, questions), which build on one another.
"""

from r3.world.edits import EDIT_WORDS
from r3.world.layout import LAYOUT_WORDS
from r3.world.prompts import COUNT_WORDS, PHOTO, RELATION_PHRASES, region_phrase
from r3.world.questions import QUESTION_WORDS
from r3.world.scene import COLORS, PLURALS, REGIONS, RELATIVE_SIZES, SHAPES, SIZES


def vocabulary() -> list[str]:
    """Every word of prompts, layout texts, edit instructions, the stop answer, VQA and ITA texts.

    Texts are words separated by spaces, commas attached to the word before them ("a cross, two squares"); the
    tokenizer lower-cases and splits punctuation off. The vocabulary only grows at its end (token ids stay): the
    GenEval++ words ("photo", "on", "larger", "smaller") come last.
    """
    words = [
        *SHAPES, *PLURALS.values(), *COLORS, *SIZES, *COUNT_WORDS, "a", "and", ",",
        *(w for phrase in RELATION_PHRASES.values() for w in phrase.split()),
        *LAYOUT_WORDS, *EDIT_WORDS, *QUESTION_WORDS,
        *PHOTO.lower().split(), *(w for r in REGIONS for w in region_phrase(r).split()), *RELATIVE_SIZES,
    ]  # fmt: skip
    return list(dict.fromkeys(words))
