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

**Independent problems in one tensor.** With ``problems=P`` the parameter's first dimension holds
P independent problems (style-transfer pairs of one batch): each has its own history, scaling,
guard, bounds and restarts, and the closure returns one loss per problem. All P are updated by
the same batched tensor operations, still without a synchronization; ``problems=1`` is the plain
optimizer (and what tests compare with torch's).

Imports: torch only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# Curvature pairs remembered by default: torch's and neural-style's.
LBFGS_HISTORY = 100
_CURVATURE_EPSILON = 1e-10  # torch.optim.LBFGS's threshold for accepting a pair
GROWTH_LIMIT = 1e3  # a rise of this many times the last accepted loss counts as diverging
BACKTRACK = 0.1  # a rejected step is retried at this fraction of its length


def keep_rows(optimizer: torch.optim.Optimizer, rows: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The one parameter of a per-problem ``optimizer`` (this L-BFGS, adam.RowAdam) and its
    state, reindexed to ``rows`` (in order; a repeated one adds a copy): the new leaf, now the
    optimizer's parameter, and the index tensor, for the optimizer's own per-problem fields."""
    (param,) = optimizer.param_groups[0]["params"]
    index = torch.tensor(rows, device=param.device)
    kept = param.detach()[index].clone().requires_grad_(True)
    state = optimizer.state.pop(param, {})
    optimizer.state[kept] = {key: value[index] for key, value in state.items()}
    optimizer.param_groups[0]["params"] = [kept]
    return kept, index


class LBFGS(torch.optim.Optimizer):
    """Unit-step L-BFGS over one contiguous parameter tensor; one closure call per ``step``.

    The first step of each problem (and the first after :meth:`restart`) follows the negative
    gradient scaled by ``min(1, 1/|g|_1)``, as torch does. After each ``step``, ``last_rejected``
    is a boolean tensor with one value per problem: whether the point that step evaluated was
    rejected by the divergence guard (and its step undone).

    Args:
        problems: independent problems along the parameter's first dimension (default 1: the
            whole tensor is one problem). The closure then returns ``problems`` losses.
        bounds: ``(low, high)`` for the problems :meth:`restart` marks as bounded, or for all of
            them when given here.
    """

    def __init__(
        self,
        params: list[Tensor],
        history_size: int = LBFGS_HISTORY,
        bounds: tuple[float, float] | None = None,
        growth_limit: float = GROWTH_LIMIT,
        backtrack: float = BACKTRACK,
        problems: int = 1,
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
        (param,) = self.param_groups[0]["params"]
        if problems < 1 or param.numel() % problems or (problems > 1 and param.shape[0] != problems):
            raise ValueError(f"the parameter of shape {tuple(param.shape)} does not hold {problems} problems")
        self.problems = problems
        self.bounds = bounds
        self.growth_limit = growth_limit
        self.backtrack = backtrack
        self.last_rejected: Tensor | None = None
        device = param.device
        # Problems whose pixels are kept within ``bounds``; problems still optimized.
        self.bounded = torch.full((problems,), bounds is not None, dtype=torch.bool, device=device)
        self.active = torch.ones(problems, dtype=torch.bool, device=device)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """One evaluation and one update of every active problem; returns the losses (float64)."""
        (param,) = self.param_groups[0]["params"]
        with torch.enable_grad():
            loss = closure()
        p = self.problems
        grad = param.grad.reshape(p, -1)
        loss = loss.detach().to(torch.float64).reshape(p)
        state = self.state[param]
        if not state:
            self._start(grad, loss, state)
        fresh, active = state["fresh"], self.active
        accepted_loss = state["accepted_loss"]
        # A diverging point is rejected; NaN compares False, hence the isfinite test.
        growth = loss - accepted_loss
        rejected = ~fresh & active & (~torch.isfinite(loss) | (growth > self.growth_limit * accepted_loss.abs()))
        # From here on the gradient is the accepted point's: NaN never reaches the history.
        grad = torch.where(rejected[:, None], state["accepted_grad"], grad)
        self.remember(state["step"], grad - state["accepted_grad"], accept=~rejected & ~fresh & active, state=state)
        state["accepted_grad"] = torch.where(active[:, None], grad, state["accepted_grad"])
        state["accepted_loss"] = torch.where(active & ~rejected, loss, accepted_loss)
        # Every branch is computed for every problem (no branch on a device value) and the
        # right one chosen per problem: rejected -> back to the accepted point and a shorter
        # step the same way; fresh -> a scaled gradient step; else the L-BFGS direction.
        first = -grad * (1.0 / grad.abs().sum(dim=1, keepdim=True)).clamp(max=1.0)
        trial_step = torch.where(
            rejected[:, None],
            self.backtrack * state["step"],
            torch.where(fresh[:, None], first, -self.direction(grad, state)),
        )
        flat = param.view(p, -1)
        flat.sub_(torch.where(rejected[:, None], state["step"], 0.0))
        if self.bounds is not None:
            # Projection: the step taken is the clamped point minus the current one.
            low, high = self.bounds
            projected = (flat + trial_step).clamp_(low, high) - flat
            trial_step = torch.where(self.bounded[:, None], projected, trial_step)
        trial_step = torch.where(active[:, None], trial_step, 0.0)
        state["step"] = trial_step
        flat.add_(trial_step)
        state["fresh"] = fresh & ~active
        self.last_rejected = rejected if p > 1 else rejected[0]
        return loss

    def restart(self, problems: Tensor, bounded: bool) -> None:
        """Forget the history of the ``problems`` (a boolean mask) and start them afresh.

        Their next step is a scaled gradient step from wherever they are; with ``bounded`` they
        are kept within ``bounds`` from then on. The others are untouched.
        """
        if bounded and self.bounds is None:
            raise ValueError("restart(bounded=True) needs bounds")
        self.bounded = torch.where(problems, bounded, self.bounded)
        (param,) = self.param_groups[0]["params"]
        state = self.state[param]
        if not state:
            return
        state["fresh"] = state["fresh"] | problems
        state["pairs"].mul_(~problems[:, None, None])
        state["sy"].mul_(~problems[:, None, None])
        state["yy"].mul_(~problems[:, None, None])
        state["gamma"] = torch.where(problems, 1.0, state["gamma"])
        state["count"] = torch.where(problems, 0, state["count"])
        state["step"] = torch.where(problems[:, None], 0.0, state["step"])

    def keep(self, rows: Sequence[int]) -> Tensor:
        """Only the problems ``rows`` (indices, in order) go on: the parameter and every
        problem's state shrink to them, each problem's history intact. Returns the new
        parameter, the leaf to optimize from now on (a batch whose finished pairs left)."""
        kept, index = keep_rows(self, rows)
        self.problems = len(rows)
        self.bounded = self.bounded[index]
        self.active = self.active[index]
        return kept

    def _start(self, grad: Tensor, loss: Tensor, state: dict) -> None:
        p, size = grad.shape
        m = self.param_groups[0]["history_size"]
        # Rows 0..m-1 hold the steps s, rows m..2m-1 the gradient changes y, by ring slot. Slots
        # never written stay zero, and a zero pair contributes exactly nothing to a direction.
        state["pairs"] = grad.new_zeros(p, 2 * m, size)
        state["sy"] = grad.new_zeros(p, m, m, dtype=torch.float64)  # sy[k, i, j] = s_i · y_j
        state["yy"] = grad.new_zeros(p, m, m, dtype=torch.float64)  # yy[k, i, j] = y_i · y_j
        state["gamma"] = grad.new_ones(p, dtype=torch.float64)
        state["count"] = torch.zeros(p, dtype=torch.long, device=grad.device)  # pairs ever stored
        state["accepted_grad"] = grad.clone()
        state["accepted_loss"] = loss
        state["step"] = torch.zeros_like(grad)
        state["fresh"] = torch.ones(p, dtype=torch.bool, device=grad.device)

    def remember(self, s: Tensor, y: Tensor, accept: Tensor, state: dict) -> None:
        """Store each problem's curvature pair (s, y) in its ring, if ``accept`` and its curvature
        is positive.

        Touches only the history (pairs, their products, gamma, count); it computes no direction.
        """
        pairs, m = state["pairs"], state["sy"].shape[1]
        p = pairs.shape[0]
        rows = torch.arange(p, device=s.device)
        ys = (y * s).sum(dim=1)
        keep = accept & (ys > _CURVATURE_EPSILON)
        state["gamma"] = torch.where(keep, ys.double() / (y * y).sum(dim=1).double(), state["gamma"])
        slot = state["count"] % m  # (P,)
        old = torch.stack([pairs[rows, slot], pairs[rows, slot + m]], dim=1)  # (P, 2, n)
        new = torch.where(keep[:, None, None], torch.stack([s, y], dim=1), old)
        pairs[rows, slot] = new[:, 0]
        pairs[rows, slot + m] = new[:, 1]
        state["count"] = state["count"] + keep.long()
        products = (pairs @ new.transpose(1, 2)).double()  # (P, 2m, 2): one pass over the history
        sy, yy = state["sy"], state["yy"]
        sy[rows, slot, :] = products[:, m:, 0]  # s_new · y_j
        sy[rows, :, slot] = products[:, :m, 1]  # s_i · y_new
        yy[rows, slot, :] = products[:, m:, 1]
        yy[rows, :, slot] = products[:, m:, 1]

    def direction(self, grad: Tensor, state: dict) -> Tensor:
        """H·g per problem, in the compact form H = γI + [S γY] M [S γY]ᵀ (Byrd, Nocedal &
        Schnabel 1994). Reads the history and changes nothing."""
        pairs, m, count = state["pairs"], state["sy"].shape[1], state["count"]
        gamma = state["gamma"][:, None]  # (P, 1)
        # Ring slots in chronological order (oldest first); unused slots are zero pairs at the end.
        start = torch.where(count >= m, count % m, 0)
        order = (start[:, None] + torch.arange(m, device=grad.device)) % m  # (P, m)
        projections = (pairs @ grad[:, :, None])[..., 0].double()  # Sᵀg and Yᵀg in one pass: (P, 2m)
        a = projections[:, :m].gather(1, order)
        b = gamma * projections[:, m:].gather(1, order)
        rows = order[:, :, None].expand(-1, -1, m)
        columns = order[:, None, :].expand(-1, m, -1)
        sy = state["sy"].gather(1, rows).gather(2, columns)
        yy = state["yy"].gather(1, rows).gather(2, columns)
        diagonal = sy.diagonal(dim1=1, dim2=2)
        empty = diagonal == 0  # zero pairs: unit pivot, no contribution
        r = sy.triu() + torch.diag_embed(empty.double())
        d = torch.where(empty, 0.0, diagonal)
        u = torch.linalg.solve_triangular(r, a[:, :, None], upper=True)
        w = d[:, :, None] * u + gamma[:, :, None] * (yy @ u) - b[:, :, None]
        top = torch.linalg.solve_triangular(r.transpose(1, 2), w, upper=False)
        coefficients = grad.new_zeros(grad.shape[0], 2 * m, dtype=torch.float64)
        coefficients.scatter_(1, order, top[:, :, 0])
        coefficients.scatter_(1, order + m, -gamma * u[:, :, 0])
        return gamma.to(grad.dtype) * grad + (coefficients.to(grad.dtype)[:, None, :] @ pairs)[:, 0]
