import torch

from r3.models.grounding import add_grounding, clause_cells, grid_sincos, grounding_index
from r3.world.scene import GRID


def test_each_clause_is_grounded_at_the_last_cell_it_names() -> None:
    tokens = "<bos> <generate> a red circle <sep> large red circle at 1 3 ; small blue square at 5 2 <eos>".split()
    cells = clause_cells(tokens)
    assert cells[:6] == [-1] * 6  # the prompt names no cell
    assert cells[6:12] == [3 * GRID + 1] * 6 and cells[12] == -1  # the ";" ends a clause
    assert cells[13:19] == [2 * GRID + 5] * 6 and cells[19] == -1
    move = clause_cells("move the large red circle at 1 3 to 6 0".split())
    assert move == [0 * GRID + 6] * 11  # a move is grounded at its destination
    assert clause_cells("at 9 3 ; two 1".split()) == [-1] * 6  # 9 is off the grid; one digit is no cell


def test_grounding_adds_the_cell_features_only_where_a_cell_is_named() -> None:
    features = grid_sincos(8)
    assert features.shape == (GRID * GRID, 8) and features.abs().max() <= 1
    assert not torch.allclose(features[0], features[1])
    index = grounding_index([["<pad>", "red", "at", "2", "1"], ["a", "b", "c", "d", "e"]])
    states = torch.zeros(2, 5, 8)
    out = add_grounding(states, index, features)
    torch.testing.assert_close(out[0, 1:], features[GRID + 2].expand(4, 8))
    assert out[0, 0].abs().sum() == 0 and out[1].abs().sum() == 0
