"""Edge ground truth from a label map: Laplacian ≠ 0, then thinning [S][P].

Reference: SPEC-data §1c. ASTMT derives PASCAL-Context edges as ``thin(|Laplacian(LabelMap)| >
0)``, the Laplacian being OpenCV's 3×3 aperture [[0, 1, 0], [1, −4, 1], [0, 1, 0]] with mirrored
borders (``BORDER_REFLECT_101``) and the thinning scikit-image's ``thin``, the two-subiteration
parallel algorithm of Guo & Hall, "Parallel thinning with two-subiteration algorithms", CACM
32(3), 1989 [P]. Both are reimplemented here (``scipy.ndimage.laplace`` with ``mode="mirror"``
is the same filter).

The thinning is :func:`pymtl._thinning.thin_maps`, shared with the edge metric.
"""

from __future__ import annotations

import numpy as np

from pymtl._thinning import thin_maps

__all__ = ["label_edges", "thin"]


def thin(mask: np.ndarray) -> np.ndarray:
    """Thin a 2-D bool map to one-pixel-wide, still connected strokes (Guo & Hall A1)."""
    thinned: np.ndarray = thin_maps(np.asarray(mask, dtype=bool)[None])[0]
    return thinned


def label_edges(label_map: np.ndarray) -> np.ndarray:
    """[H, W] float32 {0, 1} edges of an integer label map: thin(|Laplacian| > 0)."""
    from scipy import ndimage

    lap = ndimage.laplace(np.asarray(label_map, dtype=np.float64), mode="mirror")
    return thin(lap != 0).astype(np.float32)
