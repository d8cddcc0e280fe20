"""Strong-Wolfe line search with cubic interpolation, as PyTorch's LBFGS runs it (after minFunc).

Shared by every optimizer that searches along a direction (LBFGS, nonlinear conjugate gradient).
Scalars keep the precision of the arrays they come from (NumPy scalars), so a float32 problem
compares and interpolates in float32 exactly where PyTorch's 0-d tensors do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Objective = Callable[[float], tuple[float, np.ndarray]]


def dot(a: np.ndarray, b: np.ndarray):
    """Inner product of two vectors as a NumPy scalar of their dtype.

    ``einsum`` rather than BLAS: for short vectors it sums the products in order without fused
    multiply-adds, as PyTorch's ``dot`` does, so small problems follow PyTorch's iterates.
    """
    return np.einsum("i,i->", a, b)


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimiser of the cubic through (x1, f1) and (x2, f2) with slopes g1 and g2, clipped.

    Clipped to ``bounds`` (default: the interval between x1 and x2); the interval's midpoint
    when the cubic has no minimum there.
    """
    lo, hi = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square < 0:
        return (lo + hi) / 2.0
    d2 = np.sqrt(d2_square)
    if x1 <= x2:
        x = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        x = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(x, lo), hi)


def strong_wolfe(obj_func: Objective, t, d: np.ndarray, f: float, g: np.ndarray, gtd, *,
                 c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9,
                 max_ls: int = 25, dot: Callable = dot):
    """Find a step ``t`` along ``d`` meeting the strong Wolfe conditions.

    ``obj_func(t)`` returns the loss and the flat gradient at ``x + t * d``; ``f``, ``g`` and
    ``gtd`` (= g . d < 0) describe ``x`` itself. Sufficient decrease:
    ``f(t) <= f + c1 * t * gtd``; curvature: ``|g(t) . d| <= -c2 * gtd``. A bracketing phase
    grows the step by cubic extrapolation, then a zoom phase shrinks the bracket by cubic
    interpolation. ``dot`` forms the slopes (the flat ``dot`` unless a trainer sums range by
    range). Returns ``(f_new, g_new, t, evaluations)``.
    """
    d_norm = np.abs(d).max()
    g = np.array(g, copy=True)
    f_new, g_new = obj_func(t)
    evals = 1
    gtd_new = dot(g_new, d)

    # bracketing: the previous point and the current one
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    iters = 0
    bracket = bracket_f = bracket_g = bracket_gtd = None
    while iters < max_ls:
        if f_new > (f + c1 * t * gtd) or (iters > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        # extrapolate: at least 1% further, at most 10 times the current step
        lo, hi = t + 0.01 * (t - t_prev), t * 10
        t_prev, t = t, cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                                         bounds=(lo, hi))
        f_prev, g_prev, gtd_prev = f_new, g_new, gtd_new
        f_new, g_new = obj_func(t)
        evals += 1
        gtd_new = dot(g_new, d)
        iters += 1
    if iters == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # zoom: shrink the bracket [low, high] around a point meeting both conditions
    insufficient = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and iters < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                              bracket[1], bracket_f[1], bracket_gtd[1])
        t, insufficient = _keep_off_the_ends(t, bracket, insufficient)
        f_new, g_new = obj_func(t)
        evals += 1
        gtd_new = dot(g_new, d)
        iters += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            # not a sufficient decrease, or no better than the low end: t is the new high end
            bracket[high], bracket_f[high] = t, f_new
            bracket_g[high], bracket_gtd[high] = g_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
            continue
        if abs(gtd_new) <= -c2 * gtd:
            done = True
        elif gtd_new * (bracket[high] - bracket[low]) >= 0:
            # the minimum lies between the old low end and t: the old low end becomes high
            bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
            bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
        bracket[low], bracket_f[low] = t, f_new
        bracket_g[low], bracket_gtd[low] = g_new, gtd_new
    return bracket_f[low], bracket_g[low], bracket[low], evals


def _keep_off_the_ends(t, bracket: list, insufficient: bool):
    """Move a trial step that hugs an end of the bracket to 10% of its width inside.

    Only on the second such step in a row, or when ``t`` lies on or outside an end; returns the
    step and whether this one was insufficient progress.
    """
    top, bottom = max(bracket), min(bracket)
    margin = 0.1 * (top - bottom)
    if not min(top - t, t - bottom) < margin:  # written so that a NaN step stays put
        return t, False
    if insufficient or t >= top or t <= bottom:
        t = top - margin if abs(t - top) < abs(t - bottom) else bottom + margin
        return t, False
    return t, True
