"""Maximum one-to-one matching of predicted to ground-truth edge pixels within a radius.

Reference: the correspondence step of the BSDS boundary benchmark (``correspondPixels``),
SPEC-data §2.4 [S]; here as a maximum-cardinality bipartite matching [R] (see
:mod:`pymtl.metrics.edge` for how it differs from the MATLAB code).

A predicted pixel and a ground-truth pixel of the same image may be paired when their
Euclidean distance is at most ``radius`` pixels. :func:`match_counts` solves every problem
(one predicted map against its image's ground truth) with a numba kernel: greedy
nearest-first pairing, then phases of depth-first augmenting-path searches (Kuhn's algorithm;
visited marks are kept within a phase) until a phase finds none, which by Berge's theorem
means the matching is maximum. Neighbours are read from a padded ground-truth index grid, so
no edge list is built, and predicted pixels with no ground-truth pixel in reach are dropped
first (they can never match). :func:`match_counts_reference` computes the same counts with
SciPy's Hopcroft–Karp on an explicit graph (the test oracle).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["disc_offsets", "match_counts", "match_counts_reference"]


def disc_offsets(radius: float) -> NDArray[np.int64]:
    """[n, 2] pixel offsets (dy, dx) with dy² + dx² <= radius² (1e-9 slack), nearest first."""
    reach = math.floor(radius + 1e-9)
    span = range(-reach, reach + 1)
    pairs = [(dy, dx) for dy in span for dx in span if dy * dy + dx * dx <= radius**2 + 1e-9]
    pairs.sort(key=lambda d: (d[0] ** 2 + d[1] ** 2, d))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@numba.njit(cache=True, nogil=True)
def _augment(p0: int, pos: Any, gid: Any, off: Any, state: Any, stamp: int) -> bool:
    """Search an augmenting path from the free predicted pixel ``p0``; apply it if found."""
    match_pred, match_gt, visited, stack_p, stack_o, stack_g = state
    sp = 0
    stack_p[0], stack_o[0] = p0, 0
    while sp >= 0:
        p = stack_p[sp]
        descended = False
        while stack_o[sp] < off.shape[0]:
            o = stack_o[sp]
            stack_o[sp] = o + 1
            g = gid[pos[p] + off[o]]
            if g < 0 or visited[g] == stamp:
                continue
            visited[g] = stamp
            stack_g[sp] = g
            if match_gt[g] < 0:  # free: flip the path p0 → … → g
                for level in range(sp, -1, -1):
                    match_gt[stack_g[level]] = stack_p[level]
                    match_pred[stack_p[level]] = stack_g[level]
                return True
            sp += 1
            stack_p[sp], stack_o[sp] = match_gt[g], 0
            descended = True
            break
        if not descended:
            sp -= 1
    return False


@numba.njit(cache=True, nogil=True)
def _match_one(pos: Any, gid: Any, n_gt: int, off: Any) -> int:
    """Maximum matching size between predicted pixels ``pos`` (flat padded indices) and the
    ground-truth pixels of ``gid`` (flat padded grid: index >= 0, or −1)."""
    n = pos.shape[0]
    match_pred = np.full(n, -1, dtype=np.int64)
    match_gt = np.full(n_gt, -1, dtype=np.int64)
    visited = np.zeros(n_gt, dtype=np.int64)
    stacks = np.empty((3, n + 1), dtype=np.int64)
    state = (match_pred, match_gt, visited, stacks[0], stacks[1], stacks[2])
    size = 0
    for p in range(n):  # greedy: the nearest free ground-truth pixel
        for o in range(off.shape[0]):
            g = gid[pos[p] + off[o]]
            if g >= 0 and match_gt[g] < 0:
                match_gt[g], match_pred[p] = p, g
                size += 1
                break
    stamp, found = 0, True
    while found:
        stamp += 1
        found = False
        for p in range(n):
            if match_pred[p] < 0 and _augment(p, pos, gid, off, state, stamp):
                size += 1
                found = True
    return size


@numba.njit(cache=True, nogil=True)
def _match_all(pos: Any, start: Any, image: Any, gid: Any, n_gt: Any, off: Any) -> Any:
    out = np.zeros(image.shape[0], dtype=np.int64)
    for m in range(image.shape[0]):
        if start[m + 1] > start[m]:
            b = image[m]
            out[m] = _match_one(pos[start[m] : start[m + 1]], gid[b], n_gt[b], off)
    return out


def match_counts(
    maps: NDArray[np.bool_], image: NDArray[np.int64], truth: NDArray[np.bool_], radius: float
) -> NDArray[np.int64]:
    """Maximum number of one-to-one matches of each predicted map with its image's truth.

    Args:
        maps: [M, H, W] predicted edge pixels (e.g. one map per threshold and image).
        image: [M] index into ``truth`` of each map's image.
        truth: [B, H, W] ground-truth edge pixels.
        radius: largest matching distance in pixels (inclusive).

    Returns:
        [M] int64 match counts.
    """
    off = disc_offsets(radius)
    if off.shape[0] == 1:  # radius < 1: only coincident pixels can match
        return np.asarray((maps & truth[image]).sum(axis=(1, 2)), dtype=np.int64)
    B, H, W = truth.shape
    R = int(np.abs(off).max())
    Wp = W + 2 * R
    padded = np.pad(truth, ((0, 0), (R, R), (R, R)))
    near = np.zeros_like(truth)  # pixels with a ground-truth pixel in reach
    for dy, dx in off:
        near |= padded[:, R + dy : R + dy + H, R + dx : R + dx + W]
    m, y, x = np.nonzero(maps & near[image])
    start = np.searchsorted(m, np.arange(maps.shape[0] + 1))
    gid = np.cumsum(padded.reshape(B, -1), axis=1) - 1
    gid = np.where(padded.reshape(B, -1), gid, -1).astype(np.int64)
    n_gt = padded.reshape(B, -1).sum(axis=1).astype(np.int64)
    pos = ((y + R) * Wp + (x + R)).astype(np.int64)
    flat_off = (off[:, 0] * Wp + off[:, 1]).astype(np.int64)
    out = _match_all(pos, start, image.astype(np.int64), gid, n_gt, flat_off)
    return np.asarray(out, dtype=np.int64)


def match_counts_reference(
    maps: NDArray[np.bool_], image: NDArray[np.int64], truth: NDArray[np.bool_], radius: float
) -> NDArray[np.int64]:
    """The counts of :func:`match_counts` from SciPy's Hopcroft–Karp on an explicit graph."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    out = np.zeros(maps.shape[0], dtype=np.int64)
    for m in range(maps.shape[0]):
        p = np.argwhere(maps[m]).astype(np.float64)
        g = np.argwhere(truth[image[m]]).astype(np.float64)
        if len(p) == 0 or len(g) == 0:
            continue
        dist2 = ((p[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
        graph = csr_matrix((dist2 <= radius**2 + 1e-9).astype(np.int8))
        out[m] = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
    return out
