"""Few-step students for a flow-matching teacher, as objectives over velocity networks (v(x_t, t, y) on the path
x_t = (1 - t) x0 + t eps). The student samples with Euler on the uniform k-step grid `student_times(k)`, the same
levels as `flow_sigmas(k)`, so `imagegen sample` draws from it like from any flow model; guidance is folded in
(the targets come from the guided teacher), so each step is one network call.

- Progressive distillation (Salimans & Ho 2022): one student Euler step over [t_j, t_{j+1}] must land where the
  teacher's sampler lands in `substeps` steps (classically two Euler steps; with two, the target velocity is the
  mean of the teacher's two). The original teacher may take DPM-Solver++(2M) steps instead, the sampler it is
  best with: measured on the default recipe (bench/RESULTS.md), a 4-step chain of these targets scores FID 3.86
  with two 2M substeps and 3.27 with four, against 4.39 with two Euler substeps, so the student's ceiling rises.
- Reflow then distillation (Liu et al. 2022): flow matching on the teacher's own (noise, image) pairs, whose
  straight paths few Euler steps follow; half the times sit on the student's grid, so at k = 1 half the batch
  is the direct one-step distillation noise -> image.
"""

from __future__ import annotations

import torch

from . import noise as draws
from .diffusion import FlowDenoiser
from .guidance import EVERYWHERE, check_interval
from .samplers import SAMPLERS

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
    j = draws.randint(k, (b,), generator, device)
    return grid[j], grid[j + 1]


@torch.no_grad()
def teacher_solve(teacher, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, y: torch.Tensor,
                  substeps: int = 2, sampler: str = "euler") -> torch.Tensor:
    """x at flow times `t_next` from x at `t` (per example): the teacher velocity `teacher(x, t, y)` read as a
    denoiser and run by `sampler` (one of `imagegen.methods.samplers.SAMPLERS`) over `substeps` levels uniform
    in t, for each group of examples that share (t, t_next). Multistep history (DPM-Solver++(2M)) starts at t,
    since x_t comes from data, not from an earlier step. Grouped, the guidance band is decided per group, which
    also ran 1.13x faster than stepping every example at once (4 x 2M, batch 128)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown teacher sampler {sampler!r}; choose {', '.join(SAMPLERS)}")
    out = torch.empty_like(x)
    for a, b in torch.unique(torch.stack([t, t_next], dim=1), dim=0).tolist():
        rows = (t == a) & (t_next == b)
        times = torch.linspace(a, b, substeps + 1, dtype=torch.float64)
        sigmas = (times / (1 - times)).float()  # x_ve = x / (1 - t) = x0 + sigma eps
        out[rows] = SAMPLERS[sampler](FlowDenoiser(teacher), x[rows] / (1 - a), sigmas, cond=y[rows]) * (1 - b)
    return out


def progressive_loss(student, teacher, x0: torch.Tensor, y: torch.Tensor, k: int, *,
                     generator: torch.Generator | None = None, substeps: int = 2,
                     sampler: str = "euler") -> torch.Tensor:
    """Per-example loss of a k-step student against the teacher's sampler taking `substeps` steps per student
    step; `teacher(x_t, t, y)` returns the guided teacher velocity. x_t comes from data at a random step of the
    student's grid."""
    b = x0.shape[0]
    t, t_next = _grid_times(k, b, generator, x0.device)
    noise = draws.randn(generator, x0.shape, x0.device)
    tb = t.view(-1, 1, 1, 1)
    x_t = (1 - tb) * x0 + tb * noise
    x_next = teacher_solve(teacher, x_t, t, t_next, y, substeps, sampler)
    target = (x_next - x_t) / (t_next - t).view(-1, 1, 1, 1)  # the one Euler step's velocity that lands there
    return (student(x_t, t, y).float() - target).square().mean(dim=(1, 2, 3))


def reflow_loss(student, z: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, k: int, *,
                generator: torch.Generator | None = None, grid_share: float = 0.5) -> torch.Tensor:
    """Flow matching on coupled pairs (z, x0) drawn by the teacher: velocity target z - x0; a `grid_share` of
    the times are the k-step student's grid points, the rest uniform on (0, t_max]."""
    b = x0.shape[0]
    t_grid, _ = _grid_times(k, b, generator, x0.device)
    t_uniform = draws.rand(generator, (b,), x0.device) * T_MAX
    t = torch.where(draws.rand(generator, (b,), x0.device) < grid_share, t_grid, t_uniform)
    tb = t.view(-1, 1, 1, 1)
    v = student((1 - tb) * x0 + tb * z, t, y).float()
    return (v - (z - x0)).square().mean(dim=(1, 2, 3))


DISTILL_LOSSES = {"progressive": progressive_loss, "reflow": reflow_loss}
