"""Throughput of the ShapeWorld verifier (detect + check) on one CPU core.

    python bench/verifier.py [--canvas 32] [--n 4000] [--batch 256]

Renders n seeded examples cycling over every tag of both suites, then times verify_batch over
batches of `batch` images, and verify image by image. The last line printed is one JSON object.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: one core, as inside the RL loop

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from r3.world.prompts import examples_over_tags  # noqa: E402
from r3.world.render import render  # noqa: E402
from r3.world.verifier import verify, verify_batch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canvas", type=int, default=32)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    examples = examples_over_tags(args.n, 0, args.canvas)
    records = [record for record, _ in examples]
    images = np.stack([render(scene) for _, scene in examples])  # (N, H, W, 3) uint8
    verify_batch(images[: args.batch], records[: args.batch])  # warm-up (prototype cache)

    start = time.perf_counter()
    strict = [v.strict for i in range(0, args.n, args.batch)
              for v in verify_batch(images[i : i + args.batch], records[i : i + args.batch])]  # fmt: skip
    batched = args.n / (time.perf_counter() - start)

    n_single = min(args.n, 1000)
    start = time.perf_counter()
    for image, record in zip(images[:n_single], records[:n_single]):
        verify(image, record)
    single = n_single / (time.perf_counter() - start)

    print(json.dumps({
        "images_per_s": round(batched, 1), "single_images_per_s": round(single, 1), "canvas": args.canvas,
        "n": args.n, "batch": args.batch, "strict_mean": float(np.mean(strict)),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
