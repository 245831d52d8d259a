"""Edges from label maps (Laplacian ≠ 0, then Guo-Hall thinning), worked out by hand."""

import numpy as np
import pytest
from scipy import ndimage

from pymtl.data._label_edges import label_edges, thin


def test_vertical_boundary_keeps_the_left_column():
    labels = np.zeros((6, 8), dtype=np.uint16)
    labels[:, 4:] = 7
    # |Laplacian| > 0 on columns 3 and 4. The first subiteration deletes the east column and,
    # at the same time, the top pixel of the west one (x1 = E set, N/NE clear: G1-G3 hold).
    expected = np.zeros((6, 8), dtype=np.float32)
    expected[1:, 3] = 1
    np.testing.assert_array_equal(label_edges(labels), expected)


def test_horizontal_boundary_keeps_the_lower_row():
    labels = np.zeros((6, 8), dtype=np.int64)
    labels[3:, :] = 2
    # rows 2 and 3 are set; the first subiteration deletes row 2 and the east end of row 3
    expected = np.zeros((6, 8), dtype=np.float32)
    expected[3, :-1] = 1
    np.testing.assert_array_equal(label_edges(labels), expected)


def test_laplacian_not_neighbour_differences():
    # a 1-pixel stripe whose neighbours are id−1 and id+1 has Laplacian 0 (as in ASTMT)
    labels = np.tile(np.array([1, 1, 2, 3, 3, 3], dtype=np.float64), (5, 1))
    edges = label_edges(labels)
    assert edges[:, 2].sum() == 0
    assert (edges[:, 1] == 1).all()
    assert (edges[:, 3] == 1).all()


def test_mirrored_borders_give_no_frame():
    assert label_edges(np.full((5, 7), 3)).sum() == 0


def test_single_pixel_lines_are_kept():
    mask = np.zeros((7, 9), dtype=bool)
    mask[3, 1:8] = True
    mask[1:6, 4] = True
    np.testing.assert_array_equal(thin(mask), mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thinning_keeps_connectivity_and_removes_thickness(seed):
    rng = np.random.default_rng(seed)
    blobs = ndimage.binary_dilation(rng.random((30, 40)) > 0.97, iterations=3)
    thinned = thin(blobs)
    assert not (thinned & ~blobs).any()  # only deletes
    eight = np.ones((3, 3))
    assert ndimage.label(thinned, eight)[1] == ndimage.label(blobs, eight)[1]
    # no 2×2 block of set pixels survives
    blocks = thinned[:-1, :-1] & thinned[1:, :-1] & thinned[:-1, 1:] & thinned[1:, 1:]
    assert not blocks.any()
    np.testing.assert_array_equal(thin(thinned), thinned)  # idempotent
