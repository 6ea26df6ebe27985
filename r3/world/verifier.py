"""The exact ShapeWorld verifier: objects from pixels only, then the prompt's facts checked on them.

Detection (vectorised over a batch):
1. Each pixel goes to the palette colour whose ray from the background passes closest to it; its
   coverage alpha is its projection on that ray (0 = background, 1 = the colour). It is foreground
   iff alpha >= 0.4: after a 3x3 blur every pixel of an object keeps >= 4/9 and a pixel of the
   2-pixel gap between objects gets <= 3/9, so objects neither shrink nor merge.
2. Connected components (4-neighbour, per colour) of at least `min_area` pixels are objects; the
   centre is the centre of the component's bounding box.
3. Size and shape come from the soft coverage: every pixel within RING steps of a component goes to
   the nearest component, and its alpha (for that component's colour) is summed with moments.
   The mass (alpha sum) gives the size; the joint fourth cumulant k22 = E[x²y²] - E[x²]E[y²] - 2E[xy]²
   (0 for a square, negative for a circle, more negative for a cross) and the vertical third moment
   E[y³] (negative only for the upward triangle) give the shape, by the nearest clean-render
   prototype. Mass, k22 and E[y³] do not change under any separable blur (cumulants of a
   convolution add, and a separable kernel has k22 = 0, E[y³] = 0), which is why blurred renders
   still classify; zero-mean pixel noise only adds zero-mean noise to them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import hypot, sqrt
from typing import Any

import numpy as np
from scipy import ndimage

from r3.world.render import shape_mask
from r3.world.scene import (
    BACKGROUND,
    COLORS,
    RELATIONS,
    RELATIVE_SIZES,
    SHAPES,
    SIZES,
    SceneObject,
    check_canvas,
    object_extent,
)

FOREGROUND_ALPHA = 0.4
"""Coverage from which a pixel belongs to an object."""

RING = 1
"""Pixels around each component whose coverage also counts for its size and shape (a 3x3 blur
spreads an object by one pixel)."""

MIN_AREA_32 = 8
"""Smallest object in foreground pixels at a 32x32 canvas (scaled by area for larger canvases)."""

_COLOR_NAMES = tuple(COLORS)
_RAYS = (np.array([COLORS[c] for c in _COLOR_NAMES], dtype=np.float32) - np.float32(BACKGROUND)) / 255  # (C, 3)
_RAY_NORM2 = (_RAYS**2).sum(axis=1)  # (C,)
_PLANE_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_PLANE_STRUCTURE[1] = ndimage.generate_binary_structure(2, 1)  # 4-neighbours inside one (image, colour) plane
_GROW_FOOTPRINT = np.ones((1, 3, 3), dtype=bool)


class UnsupportedClassError(ValueError):
    """The record names a class or attribute ShapeWorld cannot verify (use the `judge` reward)."""


@dataclass(frozen=True)
class Detection:
    shape: str
    color: str
    size: str
    x: float
    y: float
    area: int


@dataclass(frozen=True)
class Verdict:
    strict: int
    partial: float


# ---------------------------------------------------------------- detection


def _as_float_batch(images: np.ndarray) -> np.ndarray:
    """uint8 or float [0, 1] images (N, H, W, 3) -> float32 (N, H, W, 3)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected shape (N, H, W, 3), got {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images: expected uint8 or float in [0, 1], got dtype {images.dtype}")
    return images.astype(np.float32, copy=False)


def _moments(weights: np.ndarray, labels: np.ndarray, xs: np.ndarray, ys: np.ndarray, n: int) -> np.ndarray:
    """Per label: (mass, cx, cy, k22 / mass², E[(y - cy)³] / mass^1.5), shape (n, 5)."""
    mass = np.bincount(labels, weights, n)  # (n,)
    safe = np.where(mass > 1e-6, mass, 1.0)
    cx = np.bincount(labels, weights * xs, n) / safe
    cy = np.bincount(labels, weights * ys, n) / safe
    dx, dy = xs - cx[labels], ys - cy[labels]  # (P,) offsets from the component's centroid
    exx = np.bincount(labels, weights * dx * dx, n) / safe
    eyy = np.bincount(labels, weights * dy * dy, n) / safe
    exy = np.bincount(labels, weights * dx * dy, n) / safe
    exxyy = np.bincount(labels, weights * dx * dx * dy * dy, n) / safe
    eyyy = np.bincount(labels, weights * dy * dy * dy, n) / safe
    k22 = exxyy - exx * eyy - 2 * exy**2
    return np.stack([mass, cx, cy, k22 / safe**2, eyyy / safe**1.5], axis=1)


@lru_cache(maxsize=None)
def _prototypes(canvas: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Mass threshold between sizes, and per clean (size, shape) mask: its size index, shape index
    and (k22, E[y³]) features."""
    sizes, shapes, features, masses = [], [], [], {size: [] for size in SIZES}
    for s, size in enumerate(SIZES):
        for k, shape in enumerate(SHAPES):
            ys, xs = np.nonzero(shape_mask(shape, object_extent(size, canvas)))
            row = _moments(np.ones(len(xs)), np.zeros(len(xs), dtype=np.int64), xs + 0.5, ys + 0.5, 1)[0]
            sizes.append(s)
            shapes.append(k)
            features.append(row[3:])
            masses[size].append(row[0])
    threshold = sqrt(max(masses["small"]) * min(masses["large"]))
    return threshold, np.array(sizes), np.array(shapes), np.array(features)


_FEATURE_SCALE = np.array([100.0, 10.0])
"""Brings k22 / mass² and E[y³] / mass^1.5 to comparable ranges (about 0.2 between shapes)."""


def _segment(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: coverage along every colour's ray (N, H, W, C), nearest colour (N, H, W), foreground (N, H, W)."""
    offset = batch - np.float32(BACKGROUND) / 255  # (N, H, W, 3)
    dot = offset @ _RAYS.T  # (N, H, W, C)
    alpha = dot / _RAY_NORM2  # (N, H, W, C)
    along = np.clip(alpha, 0, 1)
    # squared distance to each ray segment, less |offset|² (the same for every colour)
    nearest = (along * (along * _RAY_NORM2 - 2 * dot)).argmin(-1)  # (N, H, W)
    foreground = np.take_along_axis(alpha, nearest[..., None], -1)[..., 0] >= FOREGROUND_ALPHA  # (N, H, W)
    return alpha, nearest, foreground


def _classify(features: np.ndarray, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Size and shape indices per component from its (mass, cx, cy, k22, E[y³]) row: (K,) each."""
    threshold, proto_size, proto_shape, proto_features = _prototypes(canvas)
    size = (features[:, 0] >= threshold).astype(np.int64)  # (K,)
    distance = (((features[:, None, 3:] - proto_features[None]) * _FEATURE_SCALE) ** 2).sum(-1)  # (K, P)
    distance[proto_size[None, :] != size[:, None]] = np.inf
    return size, proto_shape[distance.argmin(1)]


DETECT_CHUNK = 512
"""Images processed together (bounds the float32 work arrays to a few tens of MB at 32x32)."""


def detect_batch(images: np.ndarray) -> list[list[Detection]]:
    """Objects of each image of a batch (N, H, W, 3), uint8 or float in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected shape (N, H, W, 3), got {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"images: expected square images, got {images.shape[1]}x{images.shape[2]}")
    check_canvas(images.shape[2])
    chunks = [_detect_chunk(images[start : start + DETECT_CHUNK]) for start in range(0, len(images), DETECT_CHUNK)]
    return [found for chunk in chunks for found in chunk]


def _detect_chunk(images: np.ndarray) -> list[list[Detection]]:
    batch = _as_float_batch(images)
    n, height, width, _ = batch.shape
    n_colors = len(_COLOR_NAMES)
    alpha, nearest, foreground = _segment(batch)
    planes = foreground[:, None] & (nearest[:, None] == np.arange(n_colors)[None, :, None, None])  # (N, C, H, W)
    labels, count = ndimage.label(planes.reshape(n * n_colors, height, width), structure=_PLANE_STRUCTURE)
    if count == 0:
        return [[] for _ in range(n)]
    area = np.bincount(labels.ravel(), minlength=count + 1)  # (K + 1,)

    # soft region: each pixel within RING steps of components goes to the nearest one (of any colour)
    owner = labels.reshape(n, n_colors, height, width).sum(1)  # (N, H, W); components never share a pixel
    for _ in range(RING):
        owner = np.where(owner > 0, owner, ndimage.grey_dilation(owner, footprint=_GROW_FOOTPRINT))
    labelled = np.flatnonzero(labels)
    label_color = np.zeros(count + 1, dtype=np.int64)
    label_color[labels.ravel()[labelled]] = (labelled // (height * width)) % n_colors
    index = np.flatnonzero(owner)  # (P,) into (N, H, W)
    region = owner.ravel()[index]  # (P,) component of each pixel
    weights = alpha.reshape(-1, n_colors)[index, label_color[region]].astype(np.float64)  # (P,)
    xs, ys = index % width + 0.5, (index // width) % height + 0.5
    size, shape = _classify(_moments(weights, region, xs, ys, count + 1), width)  # (K + 1,) each

    min_area = MIN_AREA_32 * (width / 32) ** 2
    results: list[list[Detection]] = [[] for _ in range(n)]
    for label, (plane, rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        if area[label] >= min_area:
            results[plane.start // n_colors].append(
                Detection(
                    shape=SHAPES[shape[label]],
                    color=_COLOR_NAMES[plane.start % n_colors],
                    size=SIZES[size[label]],
                    x=(cols.start + cols.stop) / 2,
                    y=(rows.start + rows.stop) / 2,
                    area=int(area[label]),
                )
            )
    return results


def detect(image: np.ndarray) -> list[Detection]:
    """Objects of one image (H, W, 3), uint8 or float in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image: expected shape (H, W, 3), got {image.shape}")
    return detect_batch(image[None])[0]


# ---------------------------------------------------------------- checking


RECORD_KEYS = ("tag", "prompt", "include", "exclude")
"""Keys of a prompt record the verifier knows."""

ENTRY_KEYS = ("class", "count", "color", "size", "position", "region")
"""Keys of an include / exclude entry the verifier knows (region and relative sizes: GenEval++)."""

REGION_RELATIONS = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
"""The relation to the canvas centre along which each region lies."""


def check_supported(record: dict[str, Any]) -> None:
    """Raise UnsupportedClassError if the record asserts something outside ShapeWorld."""
    allowed = {"class": SHAPES, "color": tuple(COLORS), "size": (*SIZES, *RELATIVE_SIZES)}
    prompt = record.get("prompt", "")
    for entry in [*record.get("include", []), *record.get("exclude", [])]:
        for key, values in allowed.items():
            value = entry.get(key)
            if (key == "class" or value is not None) and value not in values:
                raise UnsupportedClassError(
                    f"unsupported {key} {value!r} in prompt {prompt!r}: the ShapeWorld verifier knows "
                    f"{', '.join(values)}; use the 'judge' reward"
                )
        position = entry.get("position")
        if position is not None and position[0] not in RELATIONS:
            raise UnsupportedClassError(
                f"unsupported relation {position[0]!r} in prompt {prompt!r}: the ShapeWorld verifier knows "
                f"{', '.join(RELATIONS)}; use the 'judge' reward"
            )


def absolute_size(entry: dict[str, Any]) -> str | None:
    """The size an entry names (small / large); None when it gives none or a relative one (larger / smaller)."""
    size = entry.get("size")
    return None if size in RELATIVE_SIZES else size


def matches(obj: Detection | SceneObject, entry: dict[str, Any]) -> bool:
    """The object is of the entry's class, and of its colour and (absolute) size where those are given."""
    return (
        obj.shape == entry["class"]
        and entry.get("color") in (None, obj.color)
        and absolute_size(entry) in (None, obj.size)
    )


def relation_along(dx: Any, dy: Any, relation: str) -> Any:
    """How far (pixels) an offset (subject - reference; floats or arrays) goes in the relation's direction."""
    return {"left of": -dx, "right of": dx, "above": -dy, "below": dy}[relation]


def relation_holds(a: Detection | SceneObject, b: Detection | SceneObject, relation: str, margin: float) -> bool:
    """`a` stands `relation` `b`: its centre is >= margin pixels that way, within 60 degrees of the axis."""
    dx, dy = a.x - b.x, a.y - b.y
    along = relation_along(dx, dy, relation)
    return along >= margin and along > 0.5 * hypot(dx, dy)


def in_region(x: Any, y: Any, region: str, canvas: int) -> Any:
    """A centre (floats or arrays) lies in the GenEval++ `region` of the image: in that half of the canvas (left /
    right / above = top / below = bottom), at least relation_margin(canvas) pixels past the midline. At 32 pixels:
    left iff x <= 15, right iff x >= 17, so the 4 grid columns (rows) of a half are in it and the midline is in
    neither."""
    return relation_along(x - canvas / 2, y - canvas / 2, REGION_RELATIONS[region]) >= relation_margin(canvas)


def larger(a: Detection | SceneObject, b: Detection | SceneObject) -> bool:
    """`a` is of a larger ShapeWorld size than `b`: large (object_extent 10 pixels at 32) against small (6)."""
    return SIZES.index(a.size) > SIZES.index(b.size)


def size_holds(a: Detection | SceneObject, b: Detection | SceneObject, size: str) -> bool:
    """`a` is `size` (larger / smaller) than `b`."""
    return larger(a, b) if size == "larger" else larger(b, a)


def descriptor(entry: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(class, colour, absolute size) of a record entry; None where not given."""
    return entry["class"], entry.get("color"), absolute_size(entry)


def entry_facts(i: int, includes: list[dict[str, Any]], matched: list[list[Detection | SceneObject]],
                canvas: int) -> list[list[bool]]:
    """Per fact include i asserts besides its count, the outcome for each object (region) or each pair of objects
    (position, relative size) the fact is about."""
    entry, mine, facts = includes[i], matched[i], []
    if entry.get("position") is not None:
        relation, j = entry["position"]
        margin = relation_margin(canvas)
        facts.append([relation_holds(a, b, relation, margin) for a in mine for b in matched[j]])
    if entry.get("region") is not None:
        facts.append([bool(in_region(a.x, a.y, entry["region"], canvas)) for a in mine])
    if entry.get("size") in RELATIVE_SIZES:
        others = [j for j, e in enumerate(includes) if e.get("size") in RELATIVE_SIZES and e["size"] != entry["size"]]
        facts.append([size_holds(a, b, entry["size"]) for j in others for a in mine for b in matched[j]])
    return facts


def check(objects: Sequence[Detection | SceneObject], record: dict[str, Any], *, canvas: int = 32) -> Verdict:
    """Judge a prompt record (GenEval / GenEval++ semantics) on a list of objects on a `canvas`-pixel image.

    strict = 1 iff for every include entry at least `count` objects match it (class, colour and
    absolute size where given), every fact it asserts holds for all its objects (entry_facts):
      position [relation, j]  each object stands in that relation to each object matching include j
                              (relation_holds, margin relation_margin(canvas));
      region                  each object lies in that part of the image (in_region);
      size larger / smaller   each object is larger / smaller than each object matching an include
                              entry with the other relative size (size_holds);
    and every exclude entry has fewer than `count` matching objects.

    partial = mean over include entries i of closeness_i * placement_i, times the product over
    unpaired exclude entries e of min(1, count_e / (d_e + 1)), where
      d_i          objects matching include i, n_i its count;
      u_i          count_e - 1 for the tightest exclude e with the same class / colour / size
                   (a "paired" exclude, the exact-count idiom), else infinity;
      closeness_i  1 if n_i <= d_i <= u_i, d_i / n_i if d_i < n_i, u_i / d_i if d_i > u_i
                   (= min(d, n) / max(d, n) for exact counts);
      placement_i  product over the facts include i asserts of the share of its objects (region) or
                   pairs (position, relative size) for which the fact holds (0 if there are none),
                   1 when it asserts none;
      d_e          objects matching an exclude e that is paired with no include.
    partial == 1 exactly when strict == 1.
    """
    includes, excludes = record["include"], record.get("exclude", [])
    if not includes:
        raise ValueError(f"record {record.get('prompt')!r}: 'include' is empty, nothing to check")
    matched = [[o for o in objects if matches(o, entry)] for entry in includes]
    upper = [float("inf")] * len(includes)
    unpaired_penalty, excludes_hold = 1.0, True
    for entry in excludes:
        found = sum(matches(o, entry) for o in objects)
        excludes_hold &= found < entry["count"]
        paired = [i for i, inc in enumerate(includes) if descriptor(inc) == descriptor(entry)]
        for i in paired:
            upper[i] = min(upper[i], entry["count"] - 1)
        if not paired:
            unpaired_penalty *= min(1.0, entry["count"] / (found + 1))

    strict, scores = excludes_hold, []
    for i, entry in enumerate(includes):
        found, need = len(matched[i]), entry["count"]
        if found < need:
            closeness = found / need
        elif found > upper[i]:
            closeness = upper[i] / found
        else:
            closeness = 1.0
        strict &= found >= need
        placement = 1.0
        for outcomes in entry_facts(i, includes, matched, canvas):
            placement *= sum(outcomes) / len(outcomes) if outcomes else 0.0
            strict &= bool(outcomes) and all(outcomes)
        scores.append(closeness * placement)
    partial = unpaired_penalty * sum(scores) / len(scores)
    return Verdict(strict=int(strict), partial=float(partial))


def relation_margin(canvas: int) -> float:
    """Centre offset (pixels) a relation needs: one pixel per 32 of canvas."""
    return canvas / 32


def verify(image: np.ndarray, record: dict[str, Any]) -> Verdict:
    """check(detect(image), record); raises UnsupportedClassError for non-ShapeWorld records."""
    check_supported(record)
    image = np.asarray(image)
    return check(detect(image), record, canvas=image.shape[1])


def verify_batch(images: np.ndarray, records: Sequence[dict[str, Any]]) -> list[Verdict]:
    """verify for a batch (N, H, W, 3) with one record per image."""
    images = np.asarray(images)
    if len(images) != len(records):
        raise ValueError(f"verify_batch: {len(images)} images but {len(records)} records")
    for record in records:
        check_supported(record)
    detections = detect_batch(images)
    return [check(d, r, canvas=images.shape[2]) for d, r in zip(detections, records, strict=True)]
