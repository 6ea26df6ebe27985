"""Grounded layout conditioning (GLIGEN's idea at ShapeWorld scale): the tokens of a clause that names a
grid cell ("large red circle at 1 3", "move the blue square to 5 2") get that cell's position features added to
their conditioning states, so the image head reads *where* from the same 2D sin-cos function that places its own
latent cells, instead of having to learn what the digit tokens mean.
"""

from collections.abc import Sequence

import torch
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from torch import Tensor

from r3.world.scene import GRID

CLAUSE_END = ";"
"""Word that ends a layout clause (layout texts list objects as clauses)."""


def grid_sincos(dim: int, side: int = GRID) -> Tensor:
    """(side * side, dim) 2D sin-cos features of a side x side grid, row-major (index row * side + col): the same
    function and arguments as the SD3 head's position embedding of a side x side latent at patch 1."""
    return get_2d_sincos_pos_embed(dim, side, base_size=side, interpolation_scale=1.0, output_type="pt").float()


def clause_cells(tokens: Sequence[str]) -> list[int]:
    """Per token, the cell (row * GRID + col) that its clause names, or -1.

    Clauses are split by `;` and by special tokens (`<...>`); a clause's cell is its last pair of consecutive
    grid digits "col row" (a move's destination, an object's place)."""
    cells = [-1] * len(tokens)
    start = 0
    for end in range(len(tokens) + 1):
        if end < len(tokens) and tokens[end] != CLAUSE_END and not tokens[end].startswith("<"):
            continue
        clause = tokens[start:end]
        pairs = [
            int(row) * GRID + int(col)
            for col, row in zip(clause, clause[1:])
            if col.isdigit() and row.isdigit() and int(col) < GRID and int(row) < GRID
        ]
        if pairs:
            cells[start:end] = [pairs[-1]] * (end - start)
        start = end + 1
    return cells


def grounding_index(rows: Sequence[Sequence[str]]) -> Tensor:
    """(B, L) cell index per token of equally long token rows (padding included; -1 where nothing is grounded)."""
    return torch.tensor([clause_cells(tokens) for tokens in rows], dtype=torch.long)


def add_grounding(states: Tensor, index: Tensor, features: Tensor) -> Tensor:
    """states (B, L, D) + features[index] (GRID*GRID, D) where index (B, L) >= 0."""
    gathered = features[index.clamp(min=0)]  # (B, L, D)
    return states + gathered * (index >= 0)[..., None]
