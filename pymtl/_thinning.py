"""Morphological thinning of binary maps to one-pixel-wide strokes (edge metric, edge labels).

Reference: the two-subiteration parallel thinning of Guo & Hall (CACM 1989) as given in Lam,
Lee & Suen (TPAMI 1992) and documented for MATLAB's ``bwmorph(bw, 'thin', Inf)``, which the
BSDS/SEISM boundary benchmark applies to each binarised map [P]. Reimplemented from the
published conditions; not run against MATLAB here [R]. Each subiteration is applied to every
pixel at once, as in the Python ports of ``bwmorph 'thin'`` (scikit-image ``thin``, pyEdgeEval
``bwmorph_thin``); the tests reproduce the example their documentation gives.

Neighbours of pixel p are x1…x8, starting east and turning counter-clockwise (x1 = E,
x2 = NE, x3 = N, x4 = NW, x5 = W, x6 = SW, x7 = S, x8 = SE; outside the image counts 0).
A subiteration deletes, simultaneously, every set pixel meeting

* G1: ``X_H(p) = 1``, with ``X_H = Σ_{i=1..4} [x_{2i−1} = 0 and (x_{2i} or x_{2i+1})]``
  (x9 = x1);
* G2: ``2 <= min(n1, n2) <= 3``, ``n1 = Σ_k (x_{2k−1} or x_{2k})``,
  ``n2 = Σ_k (x_{2k} or x_{2k+1})``;
* G3 (first subiteration): ``(x2 or x3 or not x8) and x1`` is false; G3' (second):
  ``(x6 or x7 or not x4) and x5`` is false.

The two subiterations repeat until nothing changes.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["THIN_LUTS", "thin_maps", "thin_maps_reference"]

# (dy, dx) of x1..x8; bit i-1 of a neighbourhood code is x_i.
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _deletable(code: int, second: bool) -> bool:
    x = [bool(code >> i & 1) for i in range(8)]
    x = [False, *x, x[0]]  # 1-based: x[1]..x[8], x[9] = x[1]
    crossings = sum(not x[2 * i - 1] and (x[2 * i] or x[2 * i + 1]) for i in range(1, 5))
    n1 = sum(x[2 * k - 1] or x[2 * k] for k in range(1, 5))
    n2 = sum(x[2 * k] or x[2 * k + 1] for k in range(1, 5))
    if second:
        g3 = not ((x[6] or x[7] or not x[4]) and x[5])
    else:
        g3 = not ((x[2] or x[3] or not x[8]) and x[1])
    return crossings == 1 and 2 <= min(n1, n2) <= 3 and g3


THIN_LUTS: NDArray[np.uint8] = np.array(
    [[_deletable(code, second) for code in range(256)] for second in (False, True)],
    dtype=np.uint8,
)
"""[2, 256]: 1 where a set pixel with that neighbourhood code is deleted, per subiteration."""


@numba.njit(cache=True, nogil=True)
def _thin_one(img: Any, luts: Any, delta: Any) -> None:
    """Thin one zero-bordered map ``img`` (flattened [(H + 2)·(W + 2)] uint8) in place.

    ``delta[i]`` is the flat offset of neighbour x_{i+1}. Equivalent to re-scanning every pixel
    in each subiteration, but a subiteration only re-examines the pixels whose neighbourhood
    changed since it last examined them (a decision depends on the neighbourhood alone), so
    the cost follows the deletions.
    """
    n = img.shape[0]
    queue = np.empty((2, n), dtype=np.int64)
    queued = np.zeros((2, n), dtype=np.uint8)
    size = np.zeros(2, dtype=np.int64)
    for q in range(n):
        if img[q] != 0:
            for s in range(2):
                queue[s, size[s]] = q
                queued[s, q] = 1
                size[s] += 1
    marked = np.empty(n, dtype=np.int64)
    while size[0] + size[1] > 0:
        for s in range(2):
            count = 0
            for j in range(size[s]):
                q = queue[s, j]
                queued[s, q] = 0
                if img[q] == 0:
                    continue
                code = 0
                for i in range(8):
                    code |= (img[q + delta[i]] != 0) << i
                if luts[s, code] != 0:
                    marked[count] = q
                    count += 1
            size[s] = 0
            for j in range(count):  # delete together: the decisions saw the same state
                img[marked[j]] = 0
            for j in range(count):  # the set neighbours of a deleted pixel are re-examined
                for i in range(8):
                    r = marked[j] + delta[i]
                    if img[r] != 0:
                        for t in range(2):
                            if queued[t, r] == 0:
                                queued[t, r] = 1
                                queue[t, size[t]] = r
                                size[t] += 1


@numba.njit(cache=True, nogil=True)
def _thin_stack(maps: Any, luts: Any, delta: Any) -> None:
    for m in range(maps.shape[0]):
        _thin_one(maps[m], luts, delta)


def thin_maps(maps: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Thin each map of a stack [M, H, W] bool; returns a new array of the same shape."""
    M, H, W = maps.shape
    work = np.pad(maps.astype(np.uint8), ((0, 0), (1, 1), (1, 1))).reshape(M, -1)
    delta = np.array([dy * (W + 2) + dx for dy, dx in _NEIGHBOURS], dtype=np.int64)
    _thin_stack(work, THIN_LUTS, delta)
    return work.reshape(M, H + 2, W + 2)[:, 1:-1, 1:-1].astype(bool)


def thin_maps_reference(maps: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """:func:`thin_maps` by the textbook procedure: every subiteration scans every pixel
    (vectorised numpy; the test oracle of the kernel)."""
    work = np.array(maps, dtype=bool, copy=True)
    H, W = work.shape[1:]
    weights = (1 << np.arange(8)).astype(np.int64)
    changed = True
    while changed:
        changed = False
        for sub in range(2):
            padded = np.pad(work, ((0, 0), (1, 1), (1, 1)))
            code = np.zeros(work.shape, dtype=np.int64)
            for i, (dy, dx) in enumerate(_NEIGHBOURS):
                code += weights[i] * padded[:, 1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]
            delete = work & (THIN_LUTS[sub][code] != 0)
            work &= ~delete
            changed = changed or bool(delete.any())
    return work
