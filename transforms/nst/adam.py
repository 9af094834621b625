"""Adam behind the per-problem interface of our L-BFGS, so that the optimization loop has one shape.

Imports: torch only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class MaskedAdam(torch.optim.Adam):
    """``torch.optim.Adam`` over P independent problems along the parameter's first dimension,
    with L-BFGS's interface (lbfgs.py): ``active`` marks the problems still optimized (the others
    keep their values through a step), and ``last_rejected`` is always False (no guard).

    Adam's moments and step count are shared by the batch as torch keeps them; a finished
    problem's moments go on changing, which nothing reads.
    """

    def __init__(self, param: Tensor, lr: float, problems: int) -> None:
        super().__init__([param], lr=lr)
        self.problems = problems
        self.last_rejected = torch.zeros(problems, dtype=torch.bool, device=param.device)
        self._active = torch.ones(problems, dtype=torch.bool, device=param.device)
        self._all_active = True  # a host copy, so that a step never waits for the device to say so

    @property
    def active(self) -> Tensor:
        return self._active

    @active.setter
    def active(self, mask: Tensor) -> None:
        self._active = mask
        self._all_active = bool(mask.all())

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """One evaluation and one Adam update; problems that are not active keep their values."""
        (param,) = self.param_groups[0]["params"]
        frozen = None if self._all_active else param.detach().clone()
        loss = super().step(closure)
        if frozen is not None:
            keep = self._active.view(-1, *[1] * (param.dim() - 1))
            param.copy_(torch.where(keep, param, frozen))
        return loss
