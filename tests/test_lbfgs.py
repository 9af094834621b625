import pytest
import torch

from transforms.nst.lbfgs import LBFGS


def convex_problem(n: int, seed: int):
    """A strictly convex, non-quadratic objective: curvature changes along the path."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=generator, dtype=torch.float64) / n**0.5
    hessian = a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64)
    target = torch.randn(n, generator=generator, dtype=torch.float64)
    weights = torch.randn(3, n, generator=generator, dtype=torch.float64)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x - target) @ hessian @ (x - target) + torch.logsumexp(weights @ x, dim=0)

    return objective


def run(optimizer_factory, objective, n: int, steps: int) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """The optimizer after ``steps`` steps from zero, and every iterate."""
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_factory([x])
    iterates = []
    for _ in range(steps):

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = objective(x)
            loss.backward()
            return loss

        optimizer.step(closure)
        iterates.append(x.detach().clone())
    return optimizer, iterates


@pytest.mark.parametrize("history_size", [1, 4, 100])
def test_same_iterates_as_torch_lbfgs(history_size: int) -> None:
    n, steps = 30, 25  # with history 4, the ring wraps several times
    objective = convex_problem(n, seed=history_size)
    _, ours = run(lambda p: LBFGS(p, history_size=history_size), objective, n, steps)
    _, reference = run(
        lambda p: torch.optim.LBFGS(
            p, lr=1, max_iter=1, history_size=history_size, tolerance_grad=-1, tolerance_change=-1
        ),
        objective,
        n,
        steps,
    )
    for step, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        torch.testing.assert_close(mine, theirs, rtol=1e-7, atol=1e-9, msg=f"iterate {step}")
    assert objective(ours[-1]) < objective(torch.zeros(n, dtype=torch.float64))


def _history(optimizer: LBFGS) -> dict[str, torch.Tensor]:
    """A copy of everything the optimizer remembers between steps."""
    (param,) = optimizer.param_groups[0]["params"]
    return {name: value.clone() for name, value in optimizer.state[param].items() if isinstance(value, torch.Tensor)}


def _stepped(steps: int) -> LBFGS:
    """An optimizer after ``steps`` steps on a 6-dimensional convex problem, with pairs in its history."""
    optimizer, _ = run(lambda p: LBFGS(p, history_size=3), convex_problem(6, seed=5), 6, steps)
    return optimizer


def test_a_pair_without_positive_curvature_is_skipped_and_changes_nothing() -> None:
    optimizer = _stepped(4)
    (param,) = optimizer.param_groups[0]["params"]
    state = optimizer.state[param]
    before = _history(optimizer)
    assert int(before["count"]) == 3  # three pairs learnt in four steps
    s = torch.tensor([[1.0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    for y in ([[-1.0, 0, 0, 0, 0, 0]], [[0.0, 1, 0, 0, 0, 0]], [[1e-12, 0, 0, 0, 0, 0]]):  # sᵀy < 0, = 0, <= 1e-10
        optimizer.remember(s, torch.tensor(y, dtype=torch.float64), accept=torch.tensor([True]), state=state)
        after = _history(optimizer)
        for name in ("pairs", "sy", "yy", "gamma", "count"):
            assert torch.equal(after[name], before[name]), (y, name)
    # A pair with positive curvature is stored, in the oldest slot, and sets gamma = sᵀy / yᵀy.
    y = torch.tensor([[2.0, 1, 0, 0, 0, 0]], dtype=torch.float64)
    optimizer.remember(s, y, accept=torch.tensor([True]), state=state)
    assert int(state["count"]) == 4 and float(state["gamma"]) == pytest.approx(2.0 / 5.0)
    assert torch.equal(state["pairs"][0, 0], s[0]) and torch.equal(
        state["pairs"][0, 3], y[0]
    )  # slot 3 % 3 = 0: rows 0 (s) and 0 + 3 (y)
    # accept=False (a rejected or fresh point) stores nothing, whatever its curvature.
    stored = _history(optimizer)
    optimizer.remember(s, y, accept=torch.tensor([False]), state=state)
    assert all(torch.equal(value, stored[name]) for name, value in _history(optimizer).items())


def test_computing_a_direction_changes_no_history() -> None:
    optimizer = _stepped(5)
    (param,) = optimizer.param_groups[0]["params"]
    before = _history(optimizer)
    grad = torch.randn(1, param.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    first = optimizer.direction(grad, optimizer.state[param])
    after = _history(optimizer)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(optimizer.direction(grad, optimizer.state[param]), first)


def test_a_concave_stretch_keeps_the_iterates_finite() -> None:
    # On a concave direction sᵀy < 0: the pair must not poison the direction with NaN or inf.
    x = torch.tensor([0.5, -0.3], dtype=torch.float64, requires_grad=True)
    optimizer = LBFGS([x], history_size=3)
    for _ in range(6):

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.cos(3 * x).sum() + 0.01 * (x**4).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        assert torch.isfinite(x).all()


def test_rejects_several_tensors() -> None:
    with pytest.raises(ValueError, match="exactly one tensor"):
        LBFGS([torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)])


def test_problems_in_one_tensor_follow_their_own_iterates() -> None:
    # Three different problems side by side, one restarted into bounds halfway and one stopped
    # early: each must follow exactly the iterates it follows alone.
    n, steps, history = 12, 16, 4
    objectives = [convex_problem(n, seed=10 + k) for k in range(3)]

    def alone(k: int) -> list[torch.Tensor]:
        x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        optimizer = LBFGS([x], history_size=history, bounds=(-0.5, 0.5))
        optimizer.restart(torch.tensor([True]), bounded=False)
        iterates = []
        for step in range(steps if k != 2 else 7):
            if k == 1 and step == 9:
                with torch.no_grad():
                    x.clamp_(-0.5, 0.5)
                optimizer.restart(torch.tensor([True]), bounded=True)

            def closure() -> torch.Tensor:
                optimizer.zero_grad()
                loss = objectives[k](x)
                loss.backward()
                return loss

            optimizer.step(closure)
            iterates.append(x.detach().clone())
        return iterates

    x = torch.zeros(3, n, dtype=torch.float64, requires_grad=True)
    optimizer = LBFGS([x], history_size=history, bounds=(-0.5, 0.5), problems=3)
    optimizer.restart(torch.tensor([True, True, True]), bounded=False)
    together: list[torch.Tensor] = []
    for step in range(steps):
        if step == 9:
            with torch.no_grad():
                x[1].clamp_(-0.5, 0.5)
            optimizer.restart(torch.tensor([False, True, False]), bounded=True)
        if step == 7:
            optimizer.active = torch.tensor([True, True, False])

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            losses = torch.stack([objectives[k](x[k]) for k in range(3)])
            losses.sum().backward()
            return losses

        optimizer.step(closure)
        together.append(x.detach().clone())
    for k in range(3):
        for step, expected in enumerate(alone(k)):
            torch.testing.assert_close(
                together[step][k], expected, rtol=1e-12, atol=1e-12, msg=f"problem {k} step {step}"
            )
    assert torch.equal(together[-1][2], together[6][2]), "a stopped problem does not move"
    assert together[-1][1].abs().max() <= 0.5, "a bounded problem stays in its box"


def test_a_restart_is_a_fresh_optimizer_from_where_it_stands() -> None:
    # What the engine does at its in-range phase: forget the history and go on within bounds.
    n, history = 12, 4
    objective = convex_problem(n, seed=21)

    def closure_for(x: torch.Tensor, optimizer: LBFGS):
        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = objective(x)
            loss.backward()
            return loss

        return closure

    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    restarted = LBFGS([x], history_size=history, bounds=(-0.3, 0.3))
    restarted.restart(torch.tensor([True]), bounded=False)
    for _ in range(7):
        restarted.step(closure_for(x, restarted))
    with torch.no_grad():
        x.clamp_(-0.3, 0.3)
    y = x.detach().clone().requires_grad_(True)
    restarted.restart(torch.tensor([True]), bounded=True)
    fresh = LBFGS([y], history_size=history, bounds=(-0.3, 0.3))
    for step in range(8):
        restarted.step(closure_for(x, restarted))
        fresh.step(closure_for(y, fresh))
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12, msg=f"step {step} after the restart")
    assert x.abs().max() <= 0.3
