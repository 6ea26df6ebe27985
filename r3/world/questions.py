"""Understanding questions about a scene with exact one-word answers (VQA), and the ITA question.

    count     "how many red circles are there ?"            -> "two"
    color     "what color is the square ?"                  -> "blue"
    position  "is the red circle left of the blue square ?" -> "yes" / "no"
    size      "what size is the triangle ?"                 -> "small"
Objects are named only when the name is unambiguous; a position question is asked only when the
answer is plain: "yes" when the verifier's relation holds, "no" when the object is not at all on
that side (same column / row or beyond).
"""

import numpy as np

from r3.world.prompts import count_word
from r3.world.scene import COLORS, PLURALS, RELATIONS, SHAPES, Scene, SceneObject
from r3.world.verifier import relation_along, relation_holds, relation_margin

VQA_CATEGORIES = ("count", "color", "position", "size")
ITA_YES, ITA_NO = "yes", "no"
QUESTION_WORDS = ("how", "many", "are", "there", "?", "what", "color", "size", "is", "the", "does", "image",
                  "show", "left", "right", "of", "above", "below", ITA_YES, ITA_NO)
"""Words of questions and answers besides sizes, colours, classes and counts."""

ABSENT_COUNT_SHARE = 0.2
"""Share of count questions about a colour and class that the scene does not hold (answer "zero")."""


def ita_question(prompt: str) -> str:
    """Image-text alignment question; the answer is ITA_YES or ITA_NO."""
    return f"does the image show {prompt} ?"


def _words(obj: SceneObject, attributes: tuple[str, ...]) -> tuple[str, ...]:
    return (*(getattr(obj, a) for a in attributes), obj.shape)


def _unique_name(obj: SceneObject, scene: Scene, attributes: tuple[str, ...]) -> str | None:
    """Shortest name, "shape" or "<one of attributes> shape", that picks out obj alone."""
    for chosen in ((), *((a,) for a in attributes)):
        if sum(_words(o, chosen) == _words(obj, chosen) for o in scene.objects) == 1:
            return " ".join(_words(obj, chosen))
    return None


def _count_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    if rng.random() < ABSENT_COUNT_SHARE:
        present = {(o.color, o.shape) for o in scene.objects}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        color, shape = absent[int(rng.integers(len(absent)))]
    else:
        obj = scene.objects[int(rng.integers(len(scene.objects)))]
        color, shape = (obj.color if rng.random() < 0.5 else None), obj.shape
    n = sum(o.shape == shape and color in (None, o.color) for o in scene.objects)
    noun = PLURALS[shape] if color is None else f"{color} {PLURALS[shape]}"
    return f"how many {noun} are there ?", count_word(n)


def _position_candidates(scene: Scene) -> list[tuple[str, str, str, str]]:
    """(name a, relation, name b, answer) for every plainly answerable pair question."""
    names = [_unique_name(o, scene, ("color", "size")) for o in scene.objects]
    margin = relation_margin(scene.canvas)
    out = []
    for a, name_a in zip(scene.objects, names):
        for b, name_b in zip(scene.objects, names):
            if a is b or name_a is None or name_b is None:
                continue
            for relation in RELATIONS:
                dx, dy = a.x - b.x, a.y - b.y
                along = relation_along(dx, dy, relation)
                if relation_holds(a, b, relation, margin):
                    out.append((name_a, relation, name_b, ITA_YES))
                elif along <= 0:
                    out.append((name_a, relation, name_b, ITA_NO))
    return out


def sample_vqa(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    """(category, question, answer) about the scene; the category is drawn among those askable."""
    if not scene.objects:
        raise ValueError("sample_vqa: the scene has no objects to ask about")
    colored = [(o, n) for o in scene.objects if (n := _unique_name(o, scene, ("size",))) is not None]
    sized = [(o, n) for o in scene.objects if (n := _unique_name(o, scene, ("color",))) is not None]
    pairs = _position_candidates(scene)
    askable = [c for c, ok in zip(VQA_CATEGORIES, (True, bool(colored), bool(pairs), bool(sized))) if ok]
    category = askable[int(rng.integers(len(askable)))]
    if category == "count":
        question, answer = _count_question(scene, rng)
    elif category == "color":
        obj, name = colored[int(rng.integers(len(colored)))]
        question, answer = f"what color is the {name} ?", obj.color
    elif category == "size":
        obj, name = sized[int(rng.integers(len(sized)))]
        question, answer = f"what size is the {name} ?", obj.size
    else:
        want = ITA_YES if rng.random() < 0.5 else ITA_NO
        matching = [p for p in pairs if p[3] == want] or pairs
        name_a, relation, name_b, answer = matching[int(rng.integers(len(matching)))]
        question = f"is the {name_a} {relation} the {name_b} ?"
    return category, question, answer
