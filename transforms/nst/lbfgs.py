"""L-BFGS with unit steps and no host synchronization, for GPU style transfer.

Why not ``torch.optim.LBFGS``: its two-loop recursion passes every history coefficient as a
Python float (``alpha=``), two device->host synchronizations per stored pair per iteration. With
the default 100 pairs that made an iteration at 512 px on an H100 cost 17 ms instead of the
network's 5 ms (benchmarks/engine.py). This optimizer computes the same search direction with the
compact representation of Byrd, Nocedal & Schnabel (1994, eq. 2.6): a few matrix-vector products
over a ring buffer of curvature pairs and an m x m triangular solve, without leaving the device.

It reproduces ``torch.optim.LBFGS(lr=1, max_iter=1, line_search_fn=None)`` iterate for iterate
(tests/test_lbfgs.py) except in one corner: a pair with ``sᵀy <= 1e-10`` (negative curvature)
is stored as a no-op instead of being skipped, so it occupies a history slot.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

_CURVATURE_EPSILON = 1e-10  # torch.optim.LBFGS's threshold for accepting a pair


class LBFGS(torch.optim.Optimizer):
    """Unit-step L-BFGS over one contiguous parameter tensor; one closure call per ``step``.

    The first step follows the negative gradient scaled by ``min(1, 1/|g|_1)``, as torch does.
    """

    def __init__(self, params: list[Tensor], history_size: int = 100) -> None:
        if history_size < 1:
            raise ValueError(f"history_size must be >= 1, got {history_size}")
        super().__init__(params, {"history_size": history_size})
        if len(self.param_groups) != 1 or len(self.param_groups[0]["params"]) != 1:
            raise ValueError("this L-BFGS optimizes exactly one tensor")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        (param,) = self.param_groups[0]["params"]
        with torch.enable_grad():
            loss = closure()
        grad = param.grad.reshape(-1)
        state = self.state[param]
        if not state:
            size, m = grad.numel(), self.param_groups[0]["history_size"]
            # Rows 0..m-1 hold the steps s, rows m..2m-1 the gradient changes y, by ring slot.
            state["pairs"] = grad.new_zeros(2 * m, size)
            state["sy"] = grad.new_zeros(m, m, dtype=torch.float64)  # sy[i, j] = s_i · y_j
            state["yy"] = grad.new_zeros(m, m, dtype=torch.float64)  # yy[i, j] = y_i · y_j
            state["gamma"] = grad.new_ones((), dtype=torch.float64)
            state["count"] = 0
            step = -grad * (1.0 / grad.abs().sum()).clamp(max=1.0)
        else:
            step = -self._inverse_hessian_times(grad, state)
        state["previous_grad"] = grad.clone()
        state["previous_step"] = step
        param.add_(step.view_as(param))
        return loss

    def _remember(self, grad: Tensor, state: dict) -> None:
        """Store the newest (s, y) pair in the ring and update the small Gram blocks."""
        pairs, m = state["pairs"], state["sy"].shape[0]
        s = state["previous_step"]
        y = grad - state["previous_grad"]
        ys = y.dot(s)
        valid = ys > _CURVATURE_EPSILON
        state["gamma"] = torch.where(valid, ys.double() / y.dot(y).double(), state["gamma"])
        # A rejected pair is stored as zeros: it then contributes nothing (see _inverse_hessian_times).
        s, y = torch.where(valid, s, 0.0), torch.where(valid, y, 0.0)
        slot = state["count"] % m
        state["count"] += 1
        pairs[slot], pairs[m + slot] = s, y
        products = (pairs @ torch.stack([s, y], dim=1)).double()  # (2m, 2): one pass over history
        state["sy"][slot, :] = products[m:, 0]  # s_new · y_j
        state["sy"][:, slot] = products[:m, 1]  # s_i · y_new
        state["yy"][slot, :] = products[m:, 1]
        state["yy"][:, slot] = products[m:, 1]

    def _inverse_hessian_times(self, grad: Tensor, state: dict) -> Tensor:
        """H·g in the compact form H = γI + [S γY] M [S γY]ᵀ (Byrd, Nocedal & Schnabel 1994)."""
        self._remember(grad, state)
        pairs, m, count = state["pairs"], state["sy"].shape[0], state["count"]
        k = min(count, m)
        start = count % m if count >= m else 0  # ring slot of the oldest pair
        gamma = state["gamma"]

        def chronological(vector: Tensor) -> Tensor:
            return vector.roll(-start)[:k]

        projections = (pairs @ grad).double()  # Sᵀg and Yᵀg in one pass
        a = chronological(projections[:m])
        b = gamma * chronological(projections[m:])
        sy = state["sy"].roll((-start, -start), dims=(0, 1))[:k, :k]
        yy = state["yy"].roll((-start, -start), dims=(0, 1))[:k, :k]
        diagonal = sy.diagonal()
        rejected = diagonal == 0  # zero pairs: unit pivot, no contribution
        r = sy.triu() + torch.diag_embed(rejected.double())
        d = torch.where(rejected, 0.0, diagonal)
        u = torch.linalg.solve_triangular(r, a[:, None], upper=True)
        w = d[:, None] * u + gamma * (yy @ u) - b[:, None]
        top = torch.linalg.solve_triangular(r.T, w, upper=False)
        coefficients = grad.new_zeros(2 * m, dtype=torch.float64)
        coefficients[:k] = top[:, 0]
        coefficients[m : m + k] = -gamma * u[:, 0]
        coefficients = torch.cat([coefficients[:m].roll(start), coefficients[m:].roll(start)])
        return gamma.to(grad.dtype) * grad + coefficients.to(grad.dtype) @ pairs
