"""The exact Gram-space QP solvers of pymtl.balancers._minnorm against brute-force references.

The references enumerate every support (active set) and solve its KKT system; they are exact
and independent of the Lawson–Hanson active-set loop under test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pymtl.balancers._minnorm import box_min_norm, nnls_gram, simplex_min_norm

# entries on a coarse grid: duplicate, opposite, collinear and zero gradients are frequent
GRID = st.integers(-4, 4).map(lambda k: k / 2)
# gradients within six orders of magnitude (norm ratios beyond ~1e8 reach float64's limits)
FLOATS = st.one_of(st.just(0.0), st.floats(1e-3, 3), st.floats(-3, -1e-3))


@st.composite
def jacobians(draw, elements=GRID, max_tasks=4, max_dim=4):
    T = draw(st.integers(1, max_tasks))
    P = draw(st.integers(1, max_dim))
    return draw(arrays(np.float64, (T, P), elements=elements))


def brute_force_simplex(G):
    """min wᵀGw over the simplex: the best KKT point over every support."""
    T = G.shape[0]
    G = G / max(np.diag(G).max(), 1e-300)
    best, best_w = np.inf, None
    for k in range(1, T + 1):
        for S in itertools.combinations(range(T), k):
            S = list(S)
            K = np.block([[G[np.ix_(S, S)], np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
            rhs = np.r_[np.zeros(k), 1.0]
            sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
            w = np.zeros(T)
            w[S] = sol[:k]
            if (w >= -1e-12).all() and abs(w.sum() - 1) < 1e-9 and w @ G @ w < best:
                best, best_w = w @ G @ w, w
    return best_w


def brute_force_nnls(H, b):
    """min ½yᵀHy − bᵀy over y ≥ 0: the best stationary point over every support."""
    n = len(b)
    best, best_y = 0.0, np.zeros(n)
    for k in range(1, n + 1):
        for S in itertools.combinations(range(n), k):
            S = list(S)
            y = np.zeros(n)
            y[S] = np.linalg.lstsq(H[np.ix_(S, S)], b[S], rcond=None)[0]
            value = 0.5 * y @ H @ y - b @ y
            if (y >= 0).all() and value < best:
                best, best_y = value, y
    return best_y


@settings(max_examples=60, deadline=None)
@given(jacobians(elements=st.one_of(GRID, FLOATS)))
def test_simplex_min_norm_matches_brute_force(J):
    G = J @ J.T
    w = simplex_min_norm(G)
    scale = max(np.diag(G).max(), 1e-300)
    assert (w >= 0).all()
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    # the min-norm point d = Jᵀw is unique even where w is not (T > P, repeated gradients)
    d, d_ref = J.T @ w, J.T @ brute_force_simplex(G)
    assert np.linalg.norm(d - d_ref) <= 1e-7 * np.sqrt(scale)
    assert w @ G @ w <= d_ref @ d_ref + 1e-10 * scale


@settings(max_examples=60, deadline=None)
@given(jacobians(), st.data())
def test_nnls_gram_matches_brute_force(J, data):
    H = J @ J.T
    b = data.draw(arrays(np.float64, (J.shape[0],), elements=GRID)) @ H  # b in range(H)
    y = nnls_gram(H, b)
    ref = brute_force_nnls(H, b)
    assert (y >= 0).all()
    objective = 0.5 * y @ H @ y - b @ y
    assert objective <= 0.5 * ref @ H @ ref - b @ ref + 1e-10 * max(1.0, np.abs(H).max())
    grad = b - H @ y  # KKT: zero on the support, <= 0 off it
    scale = max(np.diag(H).max(), 1.0)
    assert np.abs(grad[y > 0]).max(initial=0.0) <= 1e-9 * scale
    assert grad.max(initial=0.0) <= 1e-9 * scale


def test_box_min_norm_stays_above_the_bound():
    G = np.array([[1.0, -1.0], [-1.0, 2.0]])
    v = box_min_norm(G, np.array([0.5, 0.0]))
    np.testing.assert_allclose(v, [0.5, 0.25], atol=1e-14)  # (Gv)_2 = 0: v_2 is free
    v = box_min_norm(G, np.array([0.0, 0.5]))
    np.testing.assert_allclose(v, [0.5, 0.5], atol=1e-14)


def test_zero_gram_gives_uniform_weights():
    np.testing.assert_array_equal(simplex_min_norm(np.zeros((4, 4))), np.full(4, 0.25))


def test_invalid_inputs_are_refused():
    with pytest.raises(
        ValueError, match=r"nnls_gram: expected a square \[n, n\] matrix .*\(2, 3\)"
    ):
        nnls_gram(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"where: expected a finite b of shape \(2,\)"):
        nnls_gram(np.eye(2), np.zeros(3), where="where")
    with pytest.raises(ValueError, match=r"where: the matrix must be finite"):
        nnls_gram(np.array([[np.nan]]), np.zeros(1), where="where")
    with pytest.raises(ValueError, match=r"unbounded problem: H_jj = 0 and b_j > 0"):
        nnls_gram(np.zeros((1, 1)), np.ones(1))
    with pytest.raises(ValueError, match=r"not a Gram matrix \(zero diagonal\)"):
        simplex_min_norm(np.array([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"not a Gram matrix \(negative diagonal\)"):
        box_min_norm(-np.eye(2), np.zeros(2))


def test_zero_columns_stay_at_zero():
    H = np.array([[0.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(nnls_gram(H, np.array([-1.0, 2.0])), [0.0, 0.5])
