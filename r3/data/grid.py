"""Sample grids: images with captions under them, for data cards and MLflow."""

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def image_grid(images: list[np.ndarray], captions: list[str], columns: int = 4, scale: int = 4) -> Image.Image:
    """(H, W, 3) uint8 images, upscaled `scale`x (nearest), each with a wrapped caption below."""
    if not images:
        raise ValueError("image_grid: no images")
    font = ImageFont.load_default()
    h, w = images[0].shape[:2]
    cell_w, cell_h = w * scale, h * scale
    chars = max(8, cell_w // 6)
    wrapped = [textwrap.wrap(c, chars)[:4] for c in captions]
    text_h = 11 * max(len(lines) for lines in wrapped) + 4
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * (cell_w + 4), rows * (cell_h + text_h + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (image, lines) in enumerate(zip(images, wrapped, strict=True)):
        x, y = (i % columns) * (cell_w + 4), (i // columns) * (cell_h + text_h + 4)
        grid.paste(Image.fromarray(image).resize((cell_w, cell_h), Image.NEAREST), (x, y))
        for j, line in enumerate(lines):
            draw.text((x, y + cell_h + 2 + 11 * j), line, fill=(0, 0, 0), font=font)
    return grid
