"""Adam over independent rows, behind the per-problem interface of our L-BFGS (lbfgs.py), so that
a batch's rows can pass from one pair to the next whichever optimizer runs them.

Imports: torch, and lbfgs's reindexing of a per-problem optimizer's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from transforms.nst.lbfgs import keep_rows


class RowAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba; torch.optim.Adam's update, in its order of operations) over P
    independent problems along the parameter's first dimension.

    ``torch.optim.Adam`` keeps one step count for the whole tensor, so a row handed to another
    pair would inherit the first pair's bias correction: here each row has its own moments and
    step count, which :meth:`restart` resets. ``active`` marks the rows still optimized (the
    others keep their values and moments through a step); ``last_rejected`` is always False
    (Adam has no divergence guard).
    """

    def __init__(
        self, param: Tensor, lr: float, problems: int, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        super().__init__([param], {"lr": lr, "betas": betas, "eps": eps})
        if param.shape[0] != problems:
            raise ValueError(f"the parameter of shape {tuple(param.shape)} does not hold {problems} problems")
        self.problems = problems
        self.active = torch.ones(problems, dtype=torch.bool, device=param.device)
        self.last_rejected = torch.zeros(problems, dtype=torch.bool, device=param.device)
        self.state[param] = {
            "exp_avg": torch.zeros_like(param),
            "exp_avg_sq": torch.zeros_like(param),
            "steps": torch.zeros(problems, dtype=torch.float64, device=param.device),
        }

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """One evaluation and one Adam update of every active row."""
        group = self.param_groups[0]
        (param,) = group["params"]
        with torch.enable_grad():
            loss = closure()
        beta1, beta2 = group["betas"]
        state = self.state[param]
        rows = self.active.view(-1, *[1] * (param.dim() - 1))
        grad = param.grad
        steps = state["steps"] + self.active
        exp_avg = torch.where(rows, state["exp_avg"].lerp(grad, 1 - beta1), state["exp_avg"])
        exp_avg_sq = torch.where(rows, state["exp_avg_sq"] * beta2 + (1 - beta2) * grad * grad, state["exp_avg_sq"])
        # Rows not yet stepped divide by zero here; torch.where leaves them untouched.
        bias1 = (1 - beta1**steps).to(param.dtype).view_as(rows)
        bias2_sqrt = (1 - beta2**steps).sqrt().to(param.dtype).view_as(rows)
        update = group["lr"] / bias1 * exp_avg / (exp_avg_sq.sqrt() / bias2_sqrt + group["eps"])
        param.sub_(torch.where(rows, update, 0.0))
        state.update(exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, steps=steps)
        return loss

    def restart(self, problems: Tensor) -> None:
        """Forget the moments and step count of the ``problems`` (a boolean mask)."""
        (param,) = self.param_groups[0]["params"]
        state = self.state[param]
        rows = problems.view(-1, *[1] * (param.dim() - 1))
        state["exp_avg"] = torch.where(rows, 0.0, state["exp_avg"])
        state["exp_avg_sq"] = torch.where(rows, 0.0, state["exp_avg_sq"])
        state["steps"] = torch.where(problems, 0.0, state["steps"])

    def keep(self, rows: Sequence[int]) -> Tensor:
        """The rows become ``rows`` (indices, in order; a repeated one adds a copy). Returns the
        new parameter, the leaf to optimize from now on."""
        kept, index = keep_rows(self, rows)
        self.problems = len(rows)
        self.active = self.active[index]
        self.last_rejected = self.last_rejected[index]
        return kept
