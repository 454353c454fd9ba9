"""Few-step students for a flow-matching teacher, as objectives over velocity networks (v(x_t, t, y) on the path
x_t = (1 - t) x0 + t eps). The student samples with Euler on the uniform k-step grid `student_times(k)`, the same
levels as `flow_sigmas(k)`, so `imagegen sample` draws from it like from any flow model; guidance is folded in
(the targets come from the guided teacher), so each step is one network call.

- Progressive distillation (Salimans & Ho 2022): one student Euler step over [t_j, t_{j+1}] must land where two
  teacher Euler steps land; with the midpoint between them, that velocity is the mean of the teacher's two.
- Reflow then distillation (Liu et al. 2022): flow matching on the teacher's own (noise, image) pairs, whose
  straight paths few Euler steps follow; half the times sit on the student's grid, so at k = 1 half the batch
  is the direct one-step distillation noise -> image.
"""

from __future__ import annotations

import torch

from .guidance import EVERYWHERE, check_interval

T_MAX = 200.0 / 201.0  # flow time of sigma_max = 200, where every flow sampler starts


def student_times(k: int, t_max: float = T_MAX) -> torch.Tensor:
    """k + 1 flow times from t_max down to 0, uniform: the grid of `flow_sigmas(k)`."""
    return torch.linspace(t_max, 0.0, k + 1)


def guided_velocity(net, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, scale: float,
                    null_label: int, interval=EVERYWHERE) -> torch.Tensor:
    """v_u + w (v_c - v_u) in one batched call (scale 1: the conditional velocity alone); guidance only for the
    examples whose noise level sigma = t / (1 - t) lies in lo < sigma <= hi, as the guided sampler does."""
    if scale == 1.0:
        return net(x_t, t, y).float()
    lo, hi = check_interval(interval)
    sigma = t / (1 - t)
    inside = (sigma > lo) & (sigma <= hi)
    both = net(torch.cat([x_t, x_t[inside]]), torch.cat([t, t[inside]]),
               torch.cat([y, torch.full_like(y[inside], null_label)])).float()
    v, uncond = both[: len(x_t)], both[len(x_t):]
    v[inside] = uncond + scale * (v[inside] - uncond)
    return v


def _grid_times(k: int, b: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A random step j of the k-step grid for each of b examples: (t_j, t_{j+1})."""
    grid = student_times(k).to(device)
    j = torch.randint(0, k, (b,), generator=generator, device=device)
    return grid[j], grid[j + 1]


def progressive_loss(student, teacher, x0: torch.Tensor, y: torch.Tensor, k: int, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-example loss of a k-step student against a 2k-step teacher; `teacher(x_t, t, y)` returns the guided
    teacher velocity. x_t comes from data at a random step of the student's grid."""
    b = x0.shape[0]
    t, t_next = _grid_times(k, b, generator, x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    tb, t_mid = t.view(-1, 1, 1, 1), (t + t_next) / 2
    x_t = (1 - tb) * x0 + tb * noise
    with torch.no_grad():
        v1 = teacher(x_t, t, y)
        v2 = teacher(x_t + (t_mid - t).view(-1, 1, 1, 1) * v1, t_mid, y)
    target = (v1 + v2) / 2  # (x_next - x_t) / (t_next - t) for two Euler steps of half the size
    return (student(x_t, t, y).float() - target).square().mean(dim=(1, 2, 3))


def reflow_loss(student, z: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, k: int, *,
                generator: torch.Generator | None = None, grid_share: float = 0.5) -> torch.Tensor:
    """Flow matching on coupled pairs (z, x0) drawn by the teacher: velocity target z - x0; a `grid_share` of
    the times are the k-step student's grid points, the rest uniform on (0, t_max]."""
    b = x0.shape[0]
    t_grid, _ = _grid_times(k, b, generator, x0.device)
    t_uniform = torch.rand(b, generator=generator, device=x0.device) * T_MAX
    t = torch.where(torch.rand(b, generator=generator, device=x0.device) < grid_share, t_grid, t_uniform)
    tb = t.view(-1, 1, 1, 1)
    v = student((1 - tb) * x0 + tb * z, t, y).float()
    return (v - (z - x0)).square().mean(dim=(1, 2, 3))


DISTILL_LOSSES = {"progressive": progressive_loss, "reflow": reflow_loss}
