"""The synth stage's summary: metrics.json (row counts per table, split and tag; the TIIF suite's records per split
and type), a data card, and one sample grid per tag."""

import json
from pathlib import Path

import polars as pl

from r3.data.grid import image_grid
from r3.data.io import decode_png
from r3.data.tiif_suite import TYPE_DOCS, TYPES
from r3.machine import machine_facts
from r3.world.tiif_exact import JUDGE_ONLY_PARTS
from r3.world.tiif_io import TiifRecord
from r3.world.verifier import ENTRY_KEYS

TABLE_DOCS = {
    "prompts": "prompt text, its GenEval-shaped metadata and the concrete scene that satisfies it",
    "enrichment": "prompt -> reasoning (explicit layout text satisfying the prompt) and the rendered image",
    "editing": "wrong image (one error: missing / extra / recolor / move / resize) + instruction -> fixed image",
    "reflection": "(image, prompt) -> stop answer or the instruction that fixes the image; half stop, half instruct",
    "vqa": "(image, question) -> one-word exact answer; categories count / color / position / size",
    "ita": "(image, alignment question) -> yes / no; balanced within every tag",
}


GENEVAL_PP_AS_THE_FILE = (
    "`geneval_pp` draws GenEval++ as its file (Echo-4o `test_scripts/Geneval++.jsonl`, 40 records per tag) draws",
    "it (`r3.world.prompts.GENEVAL_PP_COUNTS`, checked by tests/test_geneval_pp_distribution.py): the same count",
    "tuples at the same frequencies (counting 4-7 of one class; color_attr 3 or 4 coloured objects; color_count_attr",
    "and spatial_count_attr two classes of 1-3, 3 + 3 included; multi_object_count_attr 2 or 3 classes of 1-3, up",
    "to 9 objects); left / right as often as the file against above / below (of 40: color_spatial_attr 14,",
    "spatial_count_attr 19, size_spatial_attr 17), the left (upper) entry first; the larger entry first; and the",
    "file's phrasing per tag: \"A photo of ...\", Oxford commas, \"on the above\", no article in color_spatial_attr",
    "(\"blue circle on the left\"), the plural even at one in counting, color_count_attr and spatial_count_attr",
    "(\"one squares\") but not in multi_object_count_attr (\"one square\").",
    "",
    "Where ShapeWorld departs from the file (measured on the 32x32 canvas):",
    "",
    "* Classes and colours: ShapeWorld's 4 shapes and 6 colours, not the file's 80 COCO classes and 10 colours, so a",
    "  four-object color_attr prompt names every shape; no ShapeWorld colour begins with a vowel, so the article is",
    "  always \"a\" (the file's \"an orange chair\" has no counterpart).",
    "* Counts: none. Everything the file counts fits apart on the canvas: 9 small objects (a tenth does not), 4 large,",
    "  1 large with 8 small; a half holds 6 small or 2 large, the file asks at most 3. Every count tuple of the file",
    "  placed in 50 of 50 draws (2,500 scenes; 0.2-1.9 ms CPU per scene up to 6 objects, 3.2 / 4.6 / 7.6 ms for",
    "  7 / 8 / 9), so `MAX_OBJECTS` is 9 and no prompt is dropped.",
    "* Sizes the prompt leaves open are drawn, large less often after each stuck placement try",
    "  (`r3.world.prompts.LARGE_DECAY`): crowded scenes come out small. Share of unsized objects drawn large by",
    "  objects per scene: 2-4: 0.49-0.52, 5: 0.32, 6: 0.22, 7: 0.14, 8: 0.07, 9: 0.03.",
    "* Exact counts: every include has an exclude with count + 1; the file has excludes only in counting (where they",
    "  are the same).",
)
"""The data card's account of the `geneval_pp` suite against GenEval++'s file, with the measured departures."""


def synth_metrics(counts: dict[str, dict[str, dict[str, int]]]) -> dict:
    """counts[split][table][suite/tag] -> metrics with per-table totals."""
    return {
        split: {table: {"rows": sum(per_tag.values()), "per_tag": per_tag} for table, per_tag in tables.items()}
        for split, tables in counts.items()
    }


def tiif_metrics(tiif: dict[str, list[TiifRecord]]) -> dict:
    """{split: {"records": n, "per_type": {type: n}}} of the TIIF suite's records per split."""
    return {split: {"records": len(records), "per_type": {t: sum(r.type == t for r in records) for t in TYPES}}
            for split, records in tiif.items()}


def tiif_card(tiif: dict[str, list[TiifRecord]]) -> list[str]:
    """The data card's section on the TIIF suite: format, types with their counts and answers, what is exact, which
    TIIF-Bench types are refused."""
    train, heldout = tiif["train"], tiif["heldout"]

    def answers(t: str) -> str:
        given = [a for r in train + heldout if r.type == t for a in r.answers]
        return f"{given.count('yes')} / {given.count('no')}"

    refused: dict[str, list[str]] = {}
    for part, asks in JUDGE_ONLY_PARTS.items():
        refused.setdefault(asks, []).append(f"`{part}`")
    return [
        "## TIIF suite (`tiif/train.jsonl`, `tiif/heldout.jsonl`)",
        "",
        "TIIF-Bench's jsonl format: one record a line with exactly `type`, `short_description`, `long_description`,",
        "`yn_question_list` and `yn_answer_list` (`r3.world.tiif_io.read_tiif_file` reads these files as it reads",
        "the benchmark's). A record describes its whole image: the objects it names and nothing else. The short",
        "description is in GenEval's phrasing and the tiny model's vocabulary; the long one says the same in more,",
        "free words. Its four questions ask only what the description decides (shapes, the colours and sizes it",
        "gives, counts, the relation it names, what it says is absent): their answers are read off the scene drawn",
        "for the record and hold on every image that follows the description; every record has both answers. Every",
        "question is in the ShapeWorld grammar (`r3.world.tiif_exact`), so the suite is scored exactly, from the",
        "objects the verifier reads off an image: the evaluate stage's `tiif_short` / `tiif_long` (held-out) and",
        "the `tiif` reward (train). Train and held-out share no description (short or long); each split's",
        "descriptions are distinct. The suite draws from its own random streams: the tables above are the same with",
        "or without it.",
        "",
        "| type (TIIF-Bench's name) | records describe | train records | held-out records | answers yes / no | "
        "example (short description) |",
        "| --- | --- | ---: | ---: | ---: | --- |",
        *(f"| {t} | {TYPE_DOCS[t]} | {sum(r.type == t for r in train)} | {sum(r.type == t for r in heldout)} | "
          f"{answers(t)} | {next((r.short_description for r in heldout if r.type == t), '-')} |" for t in TYPES),
        "",
        "TIIF-Bench types that ask for what ShapeWorld cannot draw are refused by the exact scorer in one line naming",
        "the type (`r3.world.tiif_exact.type_refusal`; only the judge reward scores them): every type with a part "
        + "; ".join(f"{' / '.join(parts)} ({asks})" for asks, parts in refused.items()) + ".",
        "TIIF-Bench's combinations of the drawn types (color+2d, shape+2d, numeracy+color, comparison+2d, ...) are",
        "ShapeWorld's too and a file of them scores exactly, but the suite does not draw them.",
    ]


TagFields = tuple[str, str, str, str]
"""(suite, tag, the include fields its records use, an example prompt)."""


def _field(key: str, values: set[str]) -> str:
    """A field and, for those with a closed set of values (size, region, position's relation), the values used."""
    return key if key in ("class", "count", "color") else f"{key} ({' / '.join(sorted(values))})"


def record_fields(table_path: Path) -> list[TagFields]:
    """Per suite and tag of a synth table (in table order): the include fields its records use and its first
    prompt."""
    table = pl.read_parquet(table_path, columns=["suite", "tag", "prompt", "metadata"])
    rows = []
    for (suite, tag), group in table.group_by(["suite", "tag"], maintain_order=True):
        used: dict[str, set[str]] = {}
        for metadata in group["metadata"]:
            for entry in json.loads(metadata)["include"]:
                for key, value in entry.items():
                    used.setdefault(key, set()).add(str(value[0] if key == "position" else value))
        fields = ", ".join(_field(k, used[k]) for k in ENTRY_KEYS if k in used)
        rows.append((suite, tag, fields, group["prompt"][0]))
    return rows


def data_card(metrics: dict, redrawn: dict[str, int], canvas: int, seed: int, fields: list[TagFields],
              tiif: dict[str, list[TiifRecord]]) -> str:
    """The card; `redrawn` counts, per table (and for the held-out pool), the prompts dropped and drawn again
    because their objects could not be placed on the canvas (mentioned only when there were any); `fields` are
    record_fields of a table; `tiif` the TIIF suite's records per split."""
    lines = [
        "# ShapeWorld synthetic data",
        "",
        f"Generated by the `synth` stage (seed {seed}, canvas {canvas}x{canvas}). Images are PNG bytes;",
        "metadata is a GenEval record (`tag`, `include`, `exclude`, `prompt`) as JSON. Train and held-out",
        "share no prompt text.",
        "",
        "| table | contents | train rows | held-out rows |",
        "| --- | --- | ---: | ---: |",
    ]
    for table, doc in TABLE_DOCS.items():
        lines.append(f"| {table} | {doc} | {metrics['train'][table]['rows']} | {metrics['heldout'][table]['rows']} |")
    lines += [
        "",
        "## Suites and record fields",
        "",
        "`geneval` writes GenEval's records (`color`; `position`: [relation, index of the reference entry]).",
        "`geneval_pp` writes GenEval++'s (Echo-4o) records: `region` (the part of the image an entry's objects lie",
        "in: left / right / above / below half) and `size` larger / smaller (relative to the entry carrying the other",
        "one). Every include has an exclude of the same class, colour and absolute size with count + 1 (exact counts).",
        "",
        *GENEVAL_PP_AS_THE_FILE,
        "",
        "| suite | tag | include fields | example prompt |",
        "| --- | --- | --- | --- |",
        *(f"| {suite} | {tag} | {used} | {prompt} |" for suite, tag, used, prompt in fields),
    ]
    if sum(redrawn.values()):
        where = ", ".join(f"{name} {n}" for name, n in redrawn.items() if n)
        lines += ["", f"Prompts redrawn because their objects could not be placed on the canvas: "
                      f"{sum(redrawn.values())} ({where})."]
    lines += ["", *tiif_card(tiif)]
    return "\n".join(lines) + "\n"


def tag_grids(enrichment_path: Path, out_dir: Path, per_tag: int = 8) -> list[Path]:
    """One grid PNG per suite/tag from an enrichment table (image with its prompt)."""
    table = pl.read_parquet(enrichment_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (suite, tag), group in table.group_by(["suite", "tag"], maintain_order=True):
        rows = group.head(per_tag)
        grid = image_grid([decode_png(b) for b in rows["image"]], rows["prompt"].to_list())
        path = out_dir / f"{suite}__{tag}.png"
        grid.save(path)
        paths.append(path)
    return paths


def write_summary(counts: dict, redrawn: dict[str, int], canvas: int, seed: int, fields: list[TagFields],
                  tiif: dict[str, list[TiifRecord]], metrics_path: Path, card_path: Path, threads: int) -> dict:
    """metrics.json (row counts, the TIIF suite's records and the machine, with the stage's `threads`) and the data
    card; the metrics."""
    metrics = synth_metrics(counts)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    recorded = {**metrics, "tiif": tiif_metrics(tiif), "machine": machine_facts(threads)}
    metrics_path.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    card_path.write_text(data_card(metrics, redrawn, canvas, seed, fields, tiif))
    return recorded
