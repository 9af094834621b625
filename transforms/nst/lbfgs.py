"""L-BFGS with unit steps, a divergence guard, optional box bounds, and no host synchronization.

Why not ``torch.optim.LBFGS``: its two-loop recursion passes every history coefficient as a
Python float (``alpha=``), two device->host synchronizations per stored pair per iteration. With
the default 100 pairs that made an iteration at 512 px on an H100 cost 17 ms instead of the
network's 5 ms (benchmarks/engine.py). This optimizer computes the same search direction with the
compact representation of Byrd, Nocedal & Schnabel (1994, eq. 2.6): a few matrix-vector products
over a ring buffer of curvature pairs and an m x m triangular solve, without leaving the device.
Every decision below (accepting a pair, undoing a step) is a tensor ``where``, never a Python
``if`` on a device value, so the loop never waits for the GPU.

Without bounds and without a rejected step it reproduces
``torch.optim.LBFGS(lr=1, max_iter=1, line_search_fn=None)`` iterate for iterate
(tests/test_lbfgs.py), including its rule of skipping pairs with ``sᵀy <= 1e-10``.

Two additions, neither in torch's optimizer nor in Gatys et al.:

- **Divergence guard.** Unit steps have no line search, and on real VGG weights an early step can
  overshoot so far that the loss becomes infinite, after which every later iterate is NaN. When a
  step makes the loss non-finite or raises it by more than ``growth_limit`` times the last accepted
  loss's magnitude, it is
  undone: the next trial point is the last accepted one plus ``backtrack`` times that step, and no
  curvature pair is learnt from the rejected point. Moderate rises are kept, since L-BFGS recovers
  from them and learns curvature from them.
- **Box bounds (projection).** With ``bounds=(low, high)`` each new iterate is clamped into the
  box, and the curvature pair uses the step actually taken (the clamped one), so that every
  stored pair is a true secant pair of the objective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

_CURVATURE_EPSILON = 1e-10  # torch.optim.LBFGS's threshold for accepting a pair
GROWTH_LIMIT = 1e3  # a rise of this many times the last accepted loss counts as diverging
BACKTRACK = 0.1  # a rejected step is retried at this fraction of its length


class LBFGS(torch.optim.Optimizer):
    """Unit-step L-BFGS over one contiguous parameter tensor; one closure call per ``step``.

    The first step follows the negative gradient scaled by ``min(1, 1/|g|_1)``, as torch does.
    After each ``step``, ``last_rejected`` is a boolean tensor: whether the point that step
    evaluated was rejected by the divergence guard (and its step undone).
    """

    def __init__(
        self,
        params: list[Tensor],
        history_size: int = 100,
        bounds: tuple[float, float] | None = None,
        growth_limit: float = GROWTH_LIMIT,
        backtrack: float = BACKTRACK,
    ) -> None:
        if history_size < 1:
            raise ValueError(f"history_size must be >= 1, got {history_size}")
        if not 0 < backtrack < 1:
            raise ValueError(f"backtrack must be in (0, 1), got {backtrack}")
        if growth_limit <= 0:
            raise ValueError(f"growth_limit must be > 0, got {growth_limit}")
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
        super().__init__(params, {"history_size": history_size})
        if len(self.param_groups) != 1 or len(self.param_groups[0]["params"]) != 1:
            raise ValueError("this L-BFGS optimizes exactly one tensor")
        self.bounds = bounds
        self.growth_limit = growth_limit
        self.backtrack = backtrack
        self.last_rejected: Tensor | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        (param,) = self.param_groups[0]["params"]
        with torch.enable_grad():
            loss = closure()
        grad = param.grad.reshape(-1)
        loss = loss.detach().to(torch.float64)
        state = self.state[param]
        if not state:
            self._start(grad, loss, state)
            rejected = torch.zeros((), dtype=torch.bool, device=grad.device)
            trial_step = -grad * (1.0 / grad.abs().sum()).clamp(max=1.0)
        else:
            # A diverging point is rejected; NaN compares False, hence the isfinite test.
            accepted_loss = state["accepted_loss"]
            growth = loss - accepted_loss
            rejected = ~torch.isfinite(loss) | (growth > self.growth_limit * accepted_loss.abs())
            # From here on the gradient is the accepted point's: NaN never reaches the history.
            grad = torch.where(rejected, state["accepted_grad"], grad)
            self.remember(state["step"], grad - state["accepted_grad"], accept=~rejected, state=state)
            state["accepted_grad"] = grad.clone()
            state["accepted_loss"] = torch.where(rejected, state["accepted_loss"], loss)
            # Rejected: back to the accepted point, then a shorter step the same way. The
            # direction is computed either way (no branch on a device value) and discarded.
            trial_step = torch.where(
                rejected, self.backtrack * state["step"], -self.direction(grad, state)
            )
            param.sub_(torch.where(rejected, state["step"], 0.0).view_as(param))
        if self.bounds is not None:
            # Projection: the step taken is the clamped point minus the current one.
            low, high = self.bounds
            trial_step = (param.reshape(-1) + trial_step).clamp_(low, high) - param.reshape(-1)
        state["step"] = trial_step
        param.add_(trial_step.view_as(param))
        self.last_rejected = rejected
        return loss

    def _start(self, grad: Tensor, loss: Tensor, state: dict) -> None:
        size, m = grad.numel(), self.param_groups[0]["history_size"]
        # Rows 0..m-1 hold the steps s, rows m..2m-1 the gradient changes y, by ring slot. Slots
        # never written stay zero, and a zero pair contributes exactly nothing to a direction.
        state["pairs"] = grad.new_zeros(2 * m, size)
        state["sy"] = grad.new_zeros(m, m, dtype=torch.float64)  # sy[i, j] = s_i · y_j
        state["yy"] = grad.new_zeros(m, m, dtype=torch.float64)  # yy[i, j] = y_i · y_j
        state["gamma"] = grad.new_ones((), dtype=torch.float64)
        state["count"] = torch.zeros((), dtype=torch.long, device=grad.device)  # pairs ever stored
        state["accepted_grad"] = grad.clone()
        state["accepted_loss"] = loss

    def remember(self, s: Tensor, y: Tensor, accept: Tensor, state: dict) -> None:
        """Store the curvature pair (s, y) in the ring, if ``accept`` and its curvature is positive.

        Touches only the history (pairs, their products, gamma, count); it computes no direction.
        """
        pairs, m = state["pairs"], state["sy"].shape[0]
        ys = y.dot(s)
        keep = accept & (ys > _CURVATURE_EPSILON)
        state["gamma"] = torch.where(keep, ys.double() / y.dot(y).double(), state["gamma"])
        slot = (state["count"] % m).view(1)
        index = torch.cat([slot, slot + m])
        old = pairs.index_select(0, index)
        new = torch.where(keep, torch.stack([s, y]), old)
        pairs.index_copy_(0, index, new)
        state["count"] = state["count"] + keep.long()
        products = (pairs @ new.T).double()  # (2m, 2): one pass over the history
        sy, yy = state["sy"], state["yy"]
        sy.index_copy_(0, slot, products[m:, 0].view(1, m))  # s_new · y_j
        sy.index_copy_(1, slot, products[:m, 1].view(m, 1))  # s_i · y_new
        yy.index_copy_(0, slot, products[m:, 1].view(1, m))
        yy.index_copy_(1, slot, products[m:, 1].view(m, 1))

    def direction(self, grad: Tensor, state: dict) -> Tensor:
        """H·g in the compact form H = γI + [S γY] M [S γY]ᵀ (Byrd, Nocedal & Schnabel 1994).

        Reads the history and changes nothing.
        """
        pairs, m, count = state["pairs"], state["sy"].shape[0], state["count"]
        gamma = state["gamma"]
        # Ring slots in chronological order (oldest first); unused slots are zero pairs at the end.
        start = torch.where(count >= m, count % m, 0)
        order = (start + torch.arange(m, device=grad.device)) % m
        projections = (pairs @ grad).double()  # Sᵀg and Yᵀg in one pass
        a = projections[:m][order]
        b = gamma * projections[m:][order]
        sy = state["sy"][order][:, order]
        yy = state["yy"][order][:, order]
        diagonal = sy.diagonal()
        empty = diagonal == 0  # zero pairs: unit pivot, no contribution
        r = sy.triu() + torch.diag_embed(empty.double())
        d = torch.where(empty, 0.0, diagonal)
        u = torch.linalg.solve_triangular(r, a[:, None], upper=True)
        w = d[:, None] * u + gamma * (yy @ u) - b[:, None]
        top = torch.linalg.solve_triangular(r.T, w, upper=False)
        coefficients = grad.new_zeros(2 * m, dtype=torch.float64)
        coefficients[order] = top[:, 0]
        coefficients[m + order] = -gamma * u[:, 0]
        return gamma.to(grad.dtype) * grad + coefficients.to(grad.dtype) @ pairs
