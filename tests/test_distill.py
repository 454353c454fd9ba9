"""Distillation: the objectives' contracts, the stage plan, and `imagegen distill` end to end on a tiny teacher."""

import json

import numpy as np
import pytest
import torch

from imagegen.cli import main
from imagegen.config import DistillConfig
from imagegen.errors import UsageError
from imagegen.methods.diffusion import FlowDenoiser
from imagegen.methods.distill import (
    T_MAX,
    guided_velocity,
    progressive_loss,
    reflow_loss,
    student_times,
    teacher_solve,
)
from imagegen.methods.samplers import SAMPLERS, euler, flow_sigmas
from imagegen.models.unet import attention_keys
from imagegen.sampling import generate, load_generator
from imagegen.train import loop
from imagegen.train.distill import stages
from imagegen.utils import has_bf16_units

from .test_train import tiny_config


class Field(torch.nn.Module):
    """A smooth velocity field v(x, t, y) = sin(x) t + y / 10, with no parameters to learn."""

    def forward(self, x, t, y):
        return torch.sin(x) * t.view(-1, 1, 1, 1) + y.view(-1, 1, 1, 1) / 10


def test_student_grid_is_the_samplers_grid_and_nests_in_the_teachers():
    for k in (1, 2, 4):
        t = student_times(k)
        s = flow_sigmas(k)
        assert torch.allclose(t, s / (1 + s), atol=1e-6) and torch.allclose(student_times(2 * k)[::2], t)
    assert student_times(1)[0] == pytest.approx(T_MAX)


def test_progressive_target_is_two_teacher_euler_steps():
    """One student step with the target velocity lands where two steps of the `euler` sampler land."""
    field, k = Field(), 2
    x_t = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([3])
    seen = {}

    class Spy(torch.nn.Module):  # a "student" that records what it is asked and returns the field
        def forward(self, x, t, y_):
            seen.update(x=x.clone(), t=t.clone())
            return field(x, t, y_)

    g = torch.Generator().manual_seed(1)
    loss = progressive_loss(Spy(), field, torch.zeros(1, 1, 4, 4), y, k, generator=g)
    grid = student_times(k)
    j = int((grid - seen["t"]).abs().argmin())
    x_t, t, t_next = seen["x"], grid[j], grid[j + 1]
    v1 = field(x_t, t.view(1), y)
    v2 = field(x_t + (t - t_next) / -2 * v1, ((t + t_next) / 2).view(1), y)
    student_next = x_t + (t_next - t) * (v1 + v2) / 2
    sigmas = flow_sigmas(2 * k)[2 * j : 2 * j + 3]
    ve = euler(FlowDenoiser(field), x_t * (1 + sigmas[0]), sigmas, cond=y)
    teacher_next = ve / (1 + sigmas[-1])
    assert torch.allclose(student_next, teacher_next, atol=1e-5)
    assert loss.item() == pytest.approx(((field(x_t, t.view(1), y) - (v1 + v2) / 2) ** 2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("sampler,substeps", [("euler", 3), ("dpmpp-2m", 2), ("dpmpp-2m", 4), ("heun", 2)])
def test_teacher_solve_lands_where_the_sampler_lands_on_the_teachers_grid(sampler, substeps):
    """Every step of a 3-step student grid at once (one example per step, so per-example times, and the last step
    ends at sigma 0): `substeps` steps of the named sampler on the teacher's finer grid, in flow coordinates."""
    field, k = Field(), 3
    grid = student_times(k)
    x = torch.randn(k, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 4, 7])
    got = teacher_solve(field, x, grid[:-1], grid[1:], y, substeps, sampler)
    sigmas = flow_sigmas(substeps * k)
    for j in range(k):
        levels = sigmas[substeps * j : substeps * (j + 1) + 1]
        ve = SAMPLERS[sampler](FlowDenoiser(field), x[j : j + 1] * (1 + levels[0]), levels, cond=y[j : j + 1])
        # Heun's trapezoid over the first step (sigma 200 -> 2) multiplies float32 rounding by about 100
        assert torch.allclose(got[j : j + 1], ve / (1 + levels[-1]), atol=1e-5, rtol=1e-4 if sampler == "heun"
                              else 1e-5), j
    # a second-order target differs from the first-order one on a curved field
    assert not torch.allclose(teacher_solve(field, x, grid[:-1], grid[1:], y, 2, "euler"),
                              teacher_solve(field, x, grid[:-1], grid[1:], y, 2, "dpmpp-2m"), atol=1e-3)
    with pytest.raises(ValueError, match="unknown teacher sampler 'rk4'"):
        teacher_solve(field, x, grid[:-1], grid[1:], y, 2, "rk4")


def test_reflow_on_its_own_grid_at_one_step_is_noise_to_image():
    times = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, y):
            times.append(t.clone())
            return torch.zeros_like(x)

    z, x0 = torch.randn(6, 1, 4, 4), torch.rand(6, 1, 4, 4)
    loss = reflow_loss(Spy(), z, x0, torch.zeros(6, dtype=torch.long), 1, grid_share=1.0)
    assert torch.allclose(times[0], torch.full((6,), T_MAX))
    assert torch.allclose(loss, (z - x0).square().mean((1, 2, 3)))


def test_guided_velocity_is_one_call_and_linear():
    calls = []

    class Net(torch.nn.Module):
        def forward(self, x, t, y):
            calls.append(len(x))
            return x * 0 + (y == 10).float().view(-1, 1, 1, 1)  # 1 for the null class, else 0

    v = guided_velocity(Net(), torch.zeros(3, 1, 2, 2), torch.ones(3), torch.tensor([0, 1, 2]), 2.5, 10)
    assert calls == [6] and torch.allclose(v, torch.full_like(v, 1 + 2.5 * (0 - 1)))


def test_guided_velocity_guides_only_examples_inside_the_interval():
    class Net(torch.nn.Module):
        def forward(self, x, t, y):
            return x * 0 + (y == 10).float().view(-1, 1, 1, 1)

    t = torch.tensor([0.1, 0.5, 0.9])  # sigma = t / (1 - t): 0.11, 1, 9
    v = guided_velocity(Net(), torch.zeros(3, 1, 2, 2), t, torch.tensor([0, 1, 2]), 2.5, 10, interval=(0.5, 2))
    assert v[:, 0, 0, 0].tolist() == [0.0, 1 + 2.5 * (0 - 1), 0.0]


def test_stage_plans_and_bad_requests():
    assert stages(DistillConfig(steps=1, teacher_steps=8)) == [4, 2, 1]
    assert stages(DistillConfig(steps=4)) == [4] and stages(DistillConfig(method="reflow", steps=3)) == [3]
    with pytest.raises(UsageError, match="--steps must be 8/2, /4.*--set teacher_steps=6"):
        stages(DistillConfig(steps=3))
    assert stages(DistillConfig(steps=3, teacher_steps=6)) == [3]  # the way out that the message names
    with pytest.raises(UsageError, match="choose progressive or reflow"):
        stages(DistillConfig(method="consistency"))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "flow"
    loop.train(tiny_config(images=96), run, show_progress=False, log=lambda s: None)
    return run


@pytest.mark.parametrize("method", ["progressive", "reflow"])
def test_distill_cli_writes_a_student_that_sample_uses(teacher, tmp_path, method, capsys):
    out = tmp_path / method
    args = ["distill", str(teacher), "--method", method, "--steps", "1", "--minutes", "0.03", "--out", str(out),
            "--pairs", "40", "--set", "teacher_steps=2", "--set", "train.batch_size=16", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["steps"] == 1 and result["images"] > 0 and (out / "grid.png").is_file()
    assert result["config"]["train"]["bf16"] is has_bf16_units(load_generator(teacher).device)  # "auto", resolved, recorded
    student = load_generator(out)
    assert student.meta["sample"] == {"sampler": "euler", "steps": 1, "guidance": 1.0, "batch_size": 250}
    assert student.meta["distilled"]["guidance_folded"] == load_generator(teacher).meta["sample"]["guidance"]
    assert student.meta["distilled"]["guidance_interval"] == load_generator(teacher).meta["sample"][
        "guidance_interval"]
    if method == "progressive":  # the teacher's own sampler gives the first stage's target, unless set
        assert student.meta["distilled"]["teacher_solver"] == {
            "sampler": load_generator(teacher).meta["sample"]["sampler"], "substeps": 4}
    a = generate(student, np.arange(5), seed=0, steps=1, sampler="euler")
    assert a.shape == (5, 1, 8, 8) and main(["sample", str(out), "--n", "5", "--out", str(tmp_path / "s.npz")]) == 0
    assert "folded in already" not in capsys.readouterr().err
    assert main(["sample", str(out), "--n", "2", "--guidance", "3", "--out", str(tmp_path / "g.npz")]) == 0
    folded = load_generator(teacher).meta["sample"]["guidance"]
    assert f"has guidance {folded:g} folded in already; --guidance 3 adds more" in capsys.readouterr().err
    if method == "reflow":
        assert len(list((teacher / "pairs").glob("*.safetensors"))) == 1
        assert main(args[:-1] + ["--overwrite"]) == 0 and "reusing the teacher's pairs" in capsys.readouterr().out
    assert main(args) == 1 and "already exists" in capsys.readouterr().err  # never replaced silently


def test_a_students_student_follows_its_teachers_own_grid(teacher, tmp_path, capsys):
    """A trained teacher's sampler can step between the student's levels (4 substeps by default); a distilled
    student is good only on its own grid, so distilling it further takes its two Euler steps per student step."""
    common = ["--minutes", "0.02", "--set", "train.batch_size=16", "--set", "teacher_steps=2", "--steps", "1"]
    assert main(["distill", str(teacher), "--out", str(tmp_path / "s1"), "--set", "teacher_sampler=euler",
                 *common]) == 0
    assert load_generator(tmp_path / "s1").meta["distilled"]["teacher_solver"] == {"sampler": "euler",
                                                                                    "substeps": 4}
    assert main(["distill", str(teacher), "--out", str(tmp_path / "s2"), *common[:-4], "--set", "teacher_steps=4",
                 "--steps", "2"]) == 0
    assert main(["distill", str(tmp_path / "s2"), "--out", str(tmp_path / "s3"), *common]) == 0
    assert load_generator(tmp_path / "s3").meta["distilled"]["teacher_solver"] == {"sampler": "euler",
                                                                                    "substeps": 2}
    out = capsys.readouterr().out
    assert "first target: the teacher's euler, 2 steps per student step" in out
    # the student's student holds the guidance its teacher folded in, not the 1 it was distilled with
    first, second = (load_generator(tmp_path / r).meta["distilled"] for r in ("s2", "s3"))
    assert second["guidance_folded"] == first["guidance_folded"] == load_generator(teacher).meta["sample"]["guidance"]
    assert second["guidance_interval"] == first["guidance_interval"] and "folded in by its teacher, none added" in out


def test_a_bad_guidance_interval_is_refused_before_the_student_run_exists(teacher, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["distill", str(teacher), "--guidance-interval", "3,1", "--out", str(out)]) == 2
    assert "lo < hi" in capsys.readouterr().err and not out.exists()
    assert main(["distill", str(teacher), "--set", "guidance_interval=-1,1", "--out", str(out)]) == 2
    assert "guidance_interval" in capsys.readouterr().err and not out.exists()
    assert main(["distill", str(teacher), "--set", "teacher_sampler=rk4", "--out", str(out)]) == 2
    assert "teacher_sampler must be one of euler, heun, dpmpp-2m, ddim; got 'rk4'" in capsys.readouterr().err
    assert main(["distill", str(teacher), "--set", "teacher_substeps=0", "--out", str(out)]) == 2
    assert "teacher_substeps must be >= 1" in capsys.readouterr().err and not out.exists()
    assert main(["distill", str(teacher), "--set", "train.bf16=sometimes", "--out", str(out)]) == 2
    assert "train.bf16 must be one of true, false, auto; got 'sometimes'" in capsys.readouterr().err and not out.exists()


def test_distilling_a_gan_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "gan"
    loop.train(tiny_config("gan", images=32), run, show_progress=False, log=lambda s: None)
    assert main(["distill", str(run), "--out", str(tmp_path / "x")]) == 1
    assert "distillation needs a flow-matching teacher" in capsys.readouterr().err


def test_a_cheaper_student_has_its_own_widths_and_starts_from_scratch(teacher, tmp_path, capsys):
    out = tmp_path / "slim"
    args = ["distill", str(teacher), "--steps", "1", "--minutes", "0.02", "--out", str(out), "--student-channels",
            "4,8", "--set", "teacher_steps=2", "--set", "train.batch_size=16"]
    assert main(args) == 0
    student = load_generator(out, backend="torch")
    assert student.meta["distilled"]["student_channels"] == [4, 8]
    assert [m.out_channels for m in student.net.modules() if isinstance(m, torch.nn.Conv2d)][0] == 4  # the stem
    assert sum(p.numel() for p in student.net.parameters()) < sum(
        p.numel() for p in load_generator(teacher, backend="torch").net.parameters()) / 2
    assert generate(student, np.arange(3), steps=1, sampler="euler").shape == (3, 1, 8, 8)
    for widths, why in [("4", "needs 2 positive widths"), ("4,0", "[1] must be >= 1"), ("4,x", "whole numbers")]:
        bad = tmp_path / f"bad-{widths}"
        assert main(args[:4] + ["--out", str(bad), "--student-channels", widths]) == 2
        assert why in capsys.readouterr().err and not bad.exists()


def test_a_student_can_start_from_another_flow_run_of_a_cheaper_design(teacher, tmp_path, capsys):
    init = tmp_path / "patched"  # the same data, half the resolution inside: patch 2
    loop.train(tiny_config(images=32, **{"model.patch": 2, "model.channels": "4,8"}), init, show_progress=False,
               log=lambda s: None)
    out = tmp_path / "student"
    args = ["distill", str(teacher), "--steps", "1", "--minutes", "0.02", "--out", str(out), "--student-init",
            str(init), "--set", "teacher_steps=2", "--set", "train.batch_size=16"]
    assert main(args + ["--set", "train.lr=1e-12"]) == 0  # a learning rate of ~0: the student is still init's network
    student, start = load_generator(out, backend="torch"), load_generator(init, backend="torch")
    assert student.meta["distilled"]["student_init"] == str(init) and student.net.patch == 2
    assert student.meta["distilled"]["student_channels"] == [4, 8]
    weights = dict(start.net.named_parameters())
    assert all(torch.allclose(p, weights[k], atol=1e-6) for k, p in student.net.named_parameters())
    assert generate(student, np.arange(3), steps=1, sampler="euler").shape == (3, 1, 8, 8)
    gan = tmp_path / "gan"
    loop.train(tiny_config("gan", images=32), gan, show_progress=False, log=lambda s: None)
    for extra, why in [(["--student-init", str(gan)], "must be a flow model of the teacher's images"),
                       (["--student-channels", "4,8"], "student_channels and student_init both choose")]:
        bad = tmp_path / "bad"
        assert main(args[:4] + ["--out", str(bad), "--student-init", str(init)] + extra) == 2
        assert why in capsys.readouterr().err and not bad.exists()


def test_a_student_can_drop_the_attention_of_the_network_it_starts_from(teacher, tmp_path):
    out = tmp_path / "lean"
    assert main(["distill", str(teacher), "--steps", "1", "--minutes", "0.02", "--out", str(out), "--set",
                 "teacher_steps=2", "--set", "train.batch_size=16", "--set", "student_attention=false", "--set",
                 "train.lr=1e-12"]) == 0  # a learning rate of ~0: the student is the teacher's network less attention
    student, start = load_generator(out, backend="torch"), load_generator(teacher, backend="torch")
    assert any(type(m).__name__ == "Attention" for m in start.net.modules())
    assert not any(type(m).__name__ == "Attention" for m in student.net.modules())
    assert json.loads((out / "model.json").read_text())["config"]["mid_attention"] is False
    weights = dict(student.net.named_parameters())
    kept = {k: p for k, p in start.net.named_parameters() if k not in attention_keys(start.net)}
    assert kept.keys() == weights.keys()
    assert all(torch.allclose(p, weights[k], atol=1e-6) for k, p in kept.items())
    assert generate(student, np.arange(3), steps=1, sampler="euler").shape == (3, 1, 8, 8)
