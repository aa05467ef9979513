"""Pretext-task label generation (jem.losses.pretext) against hand-built examples."""

import itertools

import pytest
import torch

from jem.losses.pretext import (
    NEIGHBOURS,
    PretextLoss,
    context_geometry,
    context_pairs,
    cut_tiles,
    hamming_permutations,
    normalise_tiles,
    rotate_batch,
    shuffle_tiles,
    unshuffle_tiles,
)


def _ramp(size=8, b=1):
    """(b, 1, S, S) image whose pixel (r, c) holds 100 * image + S * r + c."""
    base = torch.arange(size * size, dtype=torch.float32).view(1, 1, size, size)
    return torch.cat([base + 100 * i for i in range(b)])


def test_rotation_of_a_known_asymmetric_image():
    x = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]).view(1, 1, 3, 3)
    rotated, labels = rotate_batch(torch.cat([x, x + 10]))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # label 1 = 90 degrees counter-clockwise: the top row becomes the left column, read upwards
    assert rotated[2, 0].tolist() == [[2, 5, 8], [1, 4, 7], [0, 3, 6]]
    assert rotated[4, 0].tolist() == [[8, 7, 6], [5, 4, 3], [2, 1, 0]]  # 180
    assert rotated[6, 0].tolist() == [[6, 3, 0], [7, 4, 1], [8, 5, 2]]  # 270 ccw = 90 cw
    assert torch.equal(rotated[1], x[0] + 10) and torch.equal(rotated[3], rotated[2] + 10)
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.zeros(1, 1, 3, 4))


def test_hamming_permutation_set():
    all24 = hamming_permutations(4, 24)
    assert sorted(all24) == sorted(itertools.permutations(range(4)))  # 2x2: the whole group
    perms = hamming_permutations(9, 30, seed=0)
    assert len(set(perms)) == 30 and perms == hamming_permutations(9, 30, seed=0)
    # greedy maximal average Hamming distance: the second one differs from the first everywhere
    assert sum(a != b for a, b in zip(perms[0], perms[1])) == 9
    mean_dist = sum(sum(a != b for a, b in zip(p, q)) for p, q in itertools.combinations(perms, 2)) / 435
    assert mean_dist > 8.0  # random permutation pairs average 8 of 9
    with pytest.raises(ValueError, match="permutations"):
        hamming_permutations(3, 7)


def test_tiles_permutation_round_trip_and_hand_example():
    x = _ramp(4, b=2)  # 4x4 images, 2x2 grid of 2x2 tiles, no gap
    tiles = cut_tiles(x, 2, 2, torch.zeros(2, 4, 2, dtype=torch.long))  # (2, 4, 1, 2, 2)
    assert tiles[0, 0, 0].tolist() == [[0, 1], [4, 5]] and tiles[0, 3, 0].tolist() == [[10, 11], [14, 15]]
    perms = torch.tensor([[3, 2, 1, 0], [1, 0, 3, 2]])
    shuffled = shuffle_tiles(tiles, perms)
    assert torch.equal(shuffled[0, 0], tiles[0, 3]) and torch.equal(shuffled[1, 0], tiles[1, 1])
    assert torch.equal(unshuffle_tiles(shuffled, perms), tiles)
    # offsets move a tile inside its cell: 3-px cells, 2-px tiles, cell (1, 1) at offset (1, 0)
    y = _ramp(6)
    offsets = torch.zeros(1, 4, 2, dtype=torch.long)
    offsets[0, 3] = torch.tensor([1, 0])
    t = cut_tiles(y, 2, 2, offsets)
    assert t[0, 3, 0].tolist() == [[27, 28], [33, 34]]  # rows 4-5, cols 3-4
    normed = normalise_tiles(tiles)
    torch.testing.assert_close(normed.flatten(2).mean(2), torch.zeros(2, 4), atol=1e-6, rtol=0)


def test_context_patches_of_a_hand_built_image():
    assert context_geometry(8) == (2, 1) and context_geometry(28) == (8, 1) and context_geometry(32) == (9, 2)
    x = _ramp(8, b=3)
    labels = torch.tensor([0, 4, 7])
    zero = torch.zeros(3, 2, dtype=torch.long)
    centre, neighbour = context_pairs(x, 2, 1, labels, zero, torch.zeros(3, 2, 2, dtype=torch.long))
    assert centre[0, 0].tolist() == [[27, 28], [35, 36]]  # rows 3-4, cols 3-4
    assert neighbour[0, 0].tolist() == [[0, 1], [8, 9]]  # label 0: top-left
    assert neighbour[1, 0].tolist() == [[130, 131], [138, 139]]  # label 4: right of centre (rows 3-4, cols 6-7)
    assert neighbour[2, 0].tolist() == [[254, 255], [262, 263]]  # label 7: bottom-right
    assert NEIGHBOURS[4] == (0, 1)
    # jitter shifts a patch; offsets are clamped to the image
    jit = torch.zeros(3, 2, 2, dtype=torch.long)
    jit[:, 1] = torch.tensor([1, -1])
    _, moved = context_pairs(x, 2, 1, labels, zero, jit)
    assert moved[1, 0].tolist() == [[137, 138], [145, 146]]  # rows 4-5, cols 5-6
    assert moved[0, 0].tolist() == [[8, 9], [16, 17]]  # col -1 clamped to 0


def test_pretext_loss_is_cross_entropy_with_accuracy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = PretextLoss()(logits, torch.tensor([0, 0]))
    torch.testing.assert_close(out["loss"], (torch.log1p(torch.exp(torch.tensor(-2.0)))
                                             + torch.log1p(torch.exp(torch.tensor(1.0)))) / 2)
    assert float(out["pretext_acc"]) == 0.5
