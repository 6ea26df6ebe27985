"""The `synth` stage: every dataset the later stages train and evaluate on, from ShapeWorld.

Tables (one Parquet file per split, images as PNG bytes):
  prompts      suite, tag, prompt, metadata (GenEval record JSON), scene (JSON)
  enrichment   prompt -> reasoning (layout text that satisfies the prompt) + its rendered image
  editing      wrong image (one error) + instruction -> fixed image
  reflection   (image, prompt) -> stop answer or the instruction that fixes the image (balanced)
  vqa          (image, question) -> exact one-word answer (count / color / position / size)
  ita          (image, prompt) -> aligned yes / no (balanced per tag)
and, beside them, the TIIF suite (r3.data.tiif_suite: TIIF-Bench jsonl files, train and held-out).

Train and held-out never share a prompt text: per tag a fraction of the prompt texts seen in a
candidate draw is held out, held-out rows are drawn from those candidates and train rows are
rejection-sampled outside them.
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field
from tqdm import tqdm

from r3.config import BaseConfig, Config
from r3.data.io import check_table, png_bytes, scene_from_json, scene_to_json, write_table
from r3.world.edits import ERROR_KINDS, STOP_ANSWER, corrupt
from r3.world.layout import layout_text
from r3.world.prompts import SUITES, PlacementError, sample_example, spaced_words
from r3.world.questions import ITA_NO, ITA_YES, ita_question, sample_vqa
from r3.world.render import render
from r3.world.scene import Scene

TABLES = ("prompts", "enrichment", "editing", "reflection", "vqa", "ita")
SPLITS = ("train", "heldout")
MAX_REDRAWS = 100
"""Prompts of one tag in a row whose objects could not be placed before the stage gives up."""


class SynthConfig(Config):
    """The `synth` section of params.yaml."""

    train_per_tag: int = Field(1000, ge=1)
    """Train prompts (with enrichment targets and images) per tag of every suite."""

    heldout_per_tag: int = Field(40, ge=1)
    """Held-out prompts per tag (GenEval++ uses 40 per tag)."""

    train_pairs: int = Field(8000, ge=1)
    """Train rows of each of editing, reflection, vqa and ita (tags cycled)."""

    heldout_pairs_per_tag: int = Field(20, ge=2)
    """Held-out rows per tag of each of editing, reflection, vqa and ita."""

    heldout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Share of each tag's prompt texts reserved for held-out."""

    candidates_per_tag: int = Field(2000, ge=10)
    """Prompt draws per tag used to find the tag's prompt texts before splitting them."""

    max_rejections: int = Field(10_000, ge=1)
    """Train draws that may fall on held-out texts in a row before the stage gives up."""

    tiif_train_per_type: int = Field(50, ge=1)
    """Train records per type of the TIIF suite (r3.data.tiif_suite; its own random streams: the tables above are
    drawn as without it)."""

    tiif_heldout_per_type: int = Field(25, ge=1)
    """Held-out records per type of the TIIF suite, each with a short and a long description (the evaluate stage's
    tiif_short and tiif_long)."""

    def tiif_per_type(self) -> dict[str, int]:
        """The TIIF suite's records per type of each split (r3.data.tiif_suite.tiif_suite)."""
        return {"train": self.tiif_train_per_type, "heldout": self.tiif_heldout_per_type}


@dataclass(frozen=True)
class Example:
    suite: str
    tag: str
    record: dict
    scene: Scene
    redraws: int = 0
    """Prompts drawn (and dropped) right before this one because their objects could not be placed."""


def check_tables(synth_dir: Path) -> None:
    """Every table of both splits reads, has its columns and decodes (InputError otherwise)."""
    for split in SPLITS:
        for table in TABLES:
            check_table(synth_dir / split / f"{table}.parquet")


def suite_tags() -> list[tuple[str, str]]:
    return [(suite, tag) for suite, tags in SUITES.items() for tag in tags]


def draw_example(suite: str, tag: str, rng: np.random.Generator, canvas: int) -> Example:
    """One example of the tag; a prompt whose objects cannot be placed is redrawn and counted in `redraws`."""
    for redraws in range(MAX_REDRAWS):
        try:
            record, scene = sample_example(suite, tag, rng, canvas)
        except PlacementError:
            continue
        return Example(suite, tag, record, scene, redraws)
    raise RuntimeError(f"synth: {MAX_REDRAWS} prompts of {suite}/{tag} in a row could not be placed on the canvas")


def table_rng(base: BaseConfig, table: str, split: str) -> np.random.Generator:
    return np.random.default_rng([base.seed, TABLES.index(table), SPLITS.index(split)])


def heldout_pool(base: BaseConfig, cfg: SynthConfig) -> list[Example]:
    """Held-out candidates: examples whose prompt text belongs to each tag's held-out texts."""
    pool: list[Example] = []
    for i, (suite, tag) in enumerate(suite_tags()):
        rng = np.random.default_rng([base.seed, 1000 + i])
        candidates = [draw_example(suite, tag, rng, base.canvas) for _ in range(cfg.candidates_per_tag)]
        texts = sorted({e.record["prompt"] for e in candidates}, key=spaced_words)
        n_held = max(1, round(len(texts) * cfg.heldout_fraction))
        if n_held >= len(texts):
            raise ValueError(f"synth: tag {suite}/{tag} has only {len(texts)} prompt texts; cannot hold any out")
        held = set(rng.choice(texts, size=n_held, replace=False).tolist())
        pool += [e for e in candidates if e.record["prompt"] in held]
    return pool


def pool_redraws(pool: list[Example]) -> int:
    """Prompts redrawn while drawing the held-out candidates that made it into the pool."""
    return sum(e.redraws for e in pool)


def pool_to_jsonl(pool: list[Example], path: Path) -> None:
    lines = [
        json.dumps({"suite": e.suite, "tag": e.tag, "record": e.record, "scene": scene_to_json(e.scene),
                    "redraws": e.redraws})
        for e in pool
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def pool_from_jsonl(path: Path) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [Example(r["suite"], r["tag"], r["record"], scene_from_json(r["scene"]), r["redraws"]) for r in rows]


def heldout_examples(pool: list[Example], per_tag: int, rng: np.random.Generator) -> Iterator[Example]:
    """`per_tag` examples of every tag drawn from the held-out pool (texts may repeat)."""
    for suite, tag in suite_tags():
        options = [e for e in pool if e.suite == suite and e.tag == tag]
        for index in rng.choice(len(options), size=per_tag, replace=len(options) < per_tag):
            yield options[index]


def train_examples(
    n: int, held_texts: set[str], rng: np.random.Generator, canvas: int, max_rejections: int
) -> Iterator[Example]:
    """`n` fresh examples, tags cycled, none with a held-out prompt text; `redraws` counts the unplaceable prompts
    drawn since the previous example."""
    pairs = suite_tags()
    for i in range(n):
        suite, tag = pairs[i % len(pairs)]
        redraws = 0
        for _ in range(max_rejections):
            example = draw_example(suite, tag, rng, canvas)
            redraws += example.redraws
            if example.record["prompt"] not in held_texts:
                break
        else:
            raise RuntimeError(f"synth: {max_rejections} draws for {suite}/{tag} all fell on held-out prompts")
        yield Example(suite, tag, example.record, example.scene, redraws)


def _base_row(e: Example) -> dict:
    return {"suite": e.suite, "tag": e.tag, "prompt": e.record["prompt"], "metadata": json.dumps(e.record)}


def _corrupted(e: Example, rng: np.random.Generator) -> tuple[Scene, str, str]:
    """One wrong version of the example's scene, its fixing instruction and the error kind."""
    for kind in rng.permutation(ERROR_KINDS):
        result = corrupt(e.scene, e.record, str(kind), rng)
        if result is not None:
            return result[0], result[1], str(kind)
    raise RuntimeError(f"synth: no error kind applies to prompt {e.record['prompt']!r}")


def prompt_rows(e: Example, rng: np.random.Generator) -> dict:
    return {**_base_row(e), "scene": scene_to_json(e.scene)}


def enrichment_row(e: Example, rng: np.random.Generator) -> dict:
    return {**_base_row(e), "reasoning": layout_text(e.scene), "image": png_bytes(render(e.scene))}


def editing_row(e: Example, rng: np.random.Generator) -> dict:
    wrong, instruction, kind = _corrupted(e, rng)
    return {
        **_base_row(e),
        "error": kind,
        "instruction": instruction,
        "source_image": png_bytes(render(wrong)),
        "target_image": png_bytes(render(e.scene)),
    }


def reflection_row(e: Example, rng: np.random.Generator, index: int) -> dict:
    if index % 2 == 0:
        image, target, kind = render(e.scene), STOP_ANSWER, "none"
    else:
        wrong, target, kind = _corrupted(e, rng)
        image = render(wrong)
    return {**_base_row(e), "error": kind, "target": target, "image": png_bytes(image)}


def vqa_row(e: Example, rng: np.random.Generator) -> dict:
    category, question, answer = sample_vqa(e.scene, rng)
    return {**_base_row(e), "category": category, "question": question, "answer": answer,
            "image": png_bytes(render(e.scene))}


def ita_row(e: Example, rng: np.random.Generator, index: int) -> dict:
    aligned = index % 2 == 0
    scene = e.scene if aligned else _corrupted(e, rng)[0]
    return {**_base_row(e), "question": ita_question(e.record["prompt"]), "answer": ITA_YES if aligned else ITA_NO,
            "image": png_bytes(render(scene))}


def _row_builder(table: str) -> Callable[[Example, np.random.Generator, int], dict]:
    builders: dict[str, Callable[[Example, np.random.Generator, int], dict]] = {
        "prompts": lambda e, rng, i: prompt_rows(e, rng),
        "enrichment": lambda e, rng, i: enrichment_row(e, rng),
        "editing": lambda e, rng, i: editing_row(e, rng),
        "reflection": reflection_row,
        "vqa": lambda e, rng, i: vqa_row(e, rng),
        "ita": ita_row,
    }
    return builders[table]


def build_table(
    table: str, split: str, base: BaseConfig, cfg: SynthConfig, pool: list[Example], out_path: Path
) -> tuple[dict[str, int], int]:
    """Write one table of one split; return its row count per tag and the prompts redrawn while drawing its
    examples (train only: held-out rows come from the pool, whose redraws `pool_redraws` counts)."""
    per_prompt = table in ("prompts", "enrichment")
    # prompts and enrichment share their draws so that every enrichment row has its prompt row
    rng = table_rng(base, "prompts" if per_prompt else table, split)
    if split == "heldout":
        per_tag = cfg.heldout_per_tag if per_prompt else cfg.heldout_pairs_per_tag
        examples = heldout_examples(pool, per_tag, rng)
        total = per_tag * len(suite_tags())
    else:
        total = cfg.train_per_tag * len(suite_tags()) if per_prompt else cfg.train_pairs
        held = {e.record["prompt"] for e in pool}
        examples = train_examples(total, held, rng, base.canvas, cfg.max_rejections)
    build_row = _row_builder(table)
    rows, redrawn = [], 0
    for i, e in enumerate(tqdm(examples, total=total, desc=f"synth {table}/{split}")):
        rows.append(build_row(e, rng, i))  # drawing and building share `rng`, in this order
        redrawn += e.redraws
    write_table(rows, out_path)
    counts: dict[str, int] = {}
    for row in rows:
        counts[f"{row['suite']}/{row['tag']}"] = counts.get(f"{row['suite']}/{row['tag']}", 0) + 1
    return counts, 0 if split == "heldout" else redrawn
