"""Compiled inner loop of the batch-1 path (see `batch1.py`): Numba when installed, else nothing.

`steps(...)` runs steps [r0, r1) of a chunk of batch-1 SGD on a one-hidden-layer MLP whose first-layer
pre-activations for the chunk were computed in advance (`Z`), corrected in place for the rank-1 updates of
the steps since r0 through the coupling matrix `M`. The second layer (`W2`, `b2`) is updated in place;
the gradient of the loss w.r.t. each step's pre-activations goes to `G` (the caller flushes it into the
first layer). `NUMBA` is False when Numba is not installed; `batch1.py` then runs the same algorithm with
torch ops.
"""

from __future__ import annotations

import numpy as np

try:  # optional extra [fast]
    from numba import njit
    NUMBA = True
except ImportError:  # pragma: no cover - depends on the installation
    NUMBA = False


def _steps(Z, M, lrs, decay, W2, b2, R, c_hard, c_soft, tau, G, r0, r1, O):  # pragma: no cover (compiled)
    """Steps r0..r1-1 of a chunk of T steps of a width-h MLP with C classes (all arrays float32, C-contiguous).

    Z [T, h]: pre-activations; on entry row t holds the chunk's starting weights applied to x_t (times the
    weight decay of the steps before t) minus the updates of the chunk's steps before r0; rows r0..r1-1 are
    overwritten with the true pre-activations.
    M [T, T]: M[t, s] = lr_s * (x_t . x_s + 1) * prod_{s<u<t} decay_u, the coupling of step s's rank-1
    first-layer update into step t. lrs, decay [T]: learning rate and 1 - lr * weight_decay per step.
    W2 [C, h], b2 [C]: the second layer, updated in place by SGD. The gradient of the loss w.r.t. the
    logits o is c_hard[t] * softmax(o) + c_soft[t] * softmax(o / tau) - R[t] (R [T, C], c_hard, c_soft [T]:
    the targets and loss weights, see `Batch1Path._targets`). G [T, h]: out, row t = the gradient of step
    t's loss w.r.t. its pre-activations. O [T, C]: out, row t = step t's logits (before its update), from
    which the caller computes the training loss.
    """
    h = Z.shape[1]
    C = W2.shape[0]
    o = np.empty(C, np.float32)
    e = np.empty(C, np.float32)
    q = np.empty(C, np.float32)
    zero = np.float32(0.0)
    for t in range(r0, r1):
        z = Z[t]
        g = G[t]
        for k in range(C):
            o[k] = b2[k]
        for j0 in range(0, h, TILE):  # tiles stay in L1 between the passes over them
            zt = z[j0:j0 + TILE]  # slices, so that loops run from 0 (no index wrap-around: they vectorize)
            n = zt.shape[0]
            for s in range(r0, t):  # rank-1 updates of the earlier steps of this block
                c = M[t, s]
                gs = G[s, j0:j0 + TILE]
                for j in range(n):
                    zt[j] -= c * gs[j]
            for k in range(C):
                w = W2[k, j0:j0 + TILE]
                acc = zero
                for j in range(n):
                    acc += w[j] * max(zt[j], zero)
                o[k] += acc
        for k in range(C):
            O[t, k] = o[k]
            e[k] = -R[t, k]
        if c_hard[t] != 0:
            top = o.max()
            total = zero
            for k in range(C):
                q[k] = np.exp(o[k] - top)
                total += q[k]
            for k in range(C):
                e[k] += c_hard[t] * q[k] / total
        if c_soft[t] != 0:
            top = o.max() / tau
            total = zero
            for k in range(C):
                q[k] = np.exp(o[k] / tau - top)
                total += q[k]
            for k in range(C):
                e[k] += c_soft[t] * q[k] / total
        lr = lrs[t]
        dec = decay[t]
        for j0 in range(0, h, TILE):  # backward to the hidden units and the second layer's SGD update
            zt = z[j0:j0 + TILE]
            gt = g[j0:j0 + TILE]
            n = zt.shape[0]
            for j in range(n):
                gt[j] = zero
            for k in range(C):
                w = W2[k, j0:j0 + TILE]
                ek = e[k]
                step = lr * ek
                for j in range(n):
                    gt[j] += w[j] * ek
                    w[j] = dec * w[j] - step * max(zt[j], zero)
            for j in range(n):  # through the ReLU
                gt[j] = gt[j] if zt[j] > 0 else zero
        for k in range(C):
            b2[k] = dec * b2[k] - lr * e[k]


TILE = 512  # floats per tile of the hidden units

# Reassociation and contraction let the reductions vectorize; NaN and inf keep their meaning, so a diverging
# run still shows a non-finite held-out loss.
_FAST = {"reassoc", "contract", "nsz", "arcp"}
steps = njit(cache=True, fastmath=_FAST, nogil=True)(_steps) if NUMBA else None
