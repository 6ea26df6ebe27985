"""Exactness and throughput of the ShapeWorld latent codec (the tiny model's "VAE") on one CPU core.

    python bench/codec.py [--canvas 32] [--n 10000] [--batch 256]

Renders n seeded scenes cycling over every tag of both suites, then times encode + decode over batches of `batch`
images and counts how many decode to the byte-identical render. The last line printed is one JSON object.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: one core

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from r3.world import codec  # noqa: E402
from r3.world.prompts import examples_over_tags  # noqa: E402
from r3.world.render import render  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canvas", type=int, default=32)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    images = np.stack([render(scene) for _, scene in examples_over_tags(args.n, 0, args.canvas)])  # (N, H, W, 3)
    start = time.perf_counter()
    decoded = np.concatenate([
        codec.decode(codec.encode(images[i : i + args.batch]), args.canvas) for i in range(0, args.n, args.batch)
    ])
    seconds = time.perf_counter() - start
    exact = (decoded == images).reshape(args.n, -1).all(axis=1)  # (N,)
    print(json.dumps({"roundtrip_exact": float(exact.mean()), "images_per_s": round(args.n / seconds, 1),
                      "n": args.n, "canvas": args.canvas, "channels": codec.CHANNELS}))


if __name__ == "__main__":
    main()
