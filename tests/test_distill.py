"""Distillation: the objectives' contracts, the stage plan, and `imagegen distill` end to end on a tiny teacher."""

import hashlib
import json
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imagegen.cli import main
from imagegen.config import DistillConfig, load
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
    bf16 = result["config"]["train"]["bf16"]
    assert bf16 is has_bf16_units(load_generator(teacher).device)  # "auto", resolved, recorded
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
    err = capsys.readouterr().err
    assert "train.bf16 must be one of true, false, auto; got 'sometimes'" in err and not out.exists()
    assert main(["distill", str(teacher), "--set", "guidance=1e9", "--out", str(out)]) == 2  # finite, but absurd
    assert "guidance" in capsys.readouterr().err and not out.exists()


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
    assert next(m.out_channels for m in student.net.modules() if isinstance(m, torch.nn.Conv2d)) == 4  # the stem
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


# -- distillation in the one training loop: resume, stop signals, the non-finite guard, the pairs cache

# float32 and two teacher substeps per student step: on this 2-core CPU bf16 autocast ran 8x8 images 3x slower
TINY_DISTILL = ["--steps", "1", "--set", "teacher_steps=4", "--set", "teacher_substeps=2", "--set",
                "train.batch_size=16", "--set", "train.log_every=3", "--set", "train.bf16=false", "--no-progress"]


def _signal_at(monkeypatch, call: int):
    """Sends this process SIGTERM during the `call`-th progressive loss, as `kill` would mid-step."""
    import imagegen.train.distill as distill_module

    calls = {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return progressive_loss(*args, **kwargs)

    monkeypatch.setattr(distill_module, "progressive_loss", loss)


def _plain_loss(monkeypatch):
    """The loss as it is again (monkeypatch.undo would also undo the isolated cache of conftest)."""
    import imagegen.train.distill as distill_module

    monkeypatch.setattr(distill_module, "progressive_loss", progressive_loss)


def _weights(run):
    """The student's trained state (network, EMA, optimiser moments, generator) and its artifact's bytes."""
    state = load_file(run / "state.safetensors")
    keys = [k for k in state if k.startswith(("net.student.", "ema.", "optim.", "rng."))]
    return {k: state[k] for k in keys}, hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uninterrupted(teacher, tmp_path_factory):
    """A two-stage distillation (4 -> 2 -> 1 steps), 6 steps of 16 images each, run in one go."""
    full = tmp_path_factory.mktemp("distill") / "full"
    assert main(["distill", str(teacher), "--out", str(full), "--images", "192", *TINY_DISTILL]) == 0
    result = json.loads((full / "results.json").read_text())
    assert result["images"] == 192 and result["step"] == 12 and result["stages"] == [2, 1]
    return full


def test_a_distillation_stopped_twice_resumes_to_the_student_of_an_uninterrupted_run(teacher, uninterrupted,
                                                                                      tmp_path, capsys, monkeypatch):
    """SIGTERM in stage 0, resume, SIGTERM in stage 1 (whose teacher is stage 0's EMA student, restored from the
    checkpoint), resume to the end: the same bytes as one run."""
    full, part = uninterrupted, tmp_path / "part"

    _signal_at(monkeypatch, 3)
    assert main(["distill", str(teacher), "--out", str(part), "--images", "192", *TINY_DISTILL]) == 130
    out, err = capsys.readouterr()
    assert f"Continue with: imagegen distill --resume {part}" in out and err == "imagegen: interrupted\n"
    progress = json.loads((part / "state.json").read_text())["progress"]
    assert (progress["images"], progress["stage"]) == (48, 0) and not (part / "results.json").exists()
    assert load_generator(part).meta["sample"]["steps"] == 2  # the artifact so far: this stage's student

    _signal_at(monkeypatch, 5)  # the resumed run's 5th step: step 8 of 12, in stage 1
    assert main(["distill", "--resume", str(part), "--no-progress"]) == 130
    assert f"resumed {part} at 48 images" in capsys.readouterr().out
    progress = json.loads((part / "state.json").read_text())["progress"]
    assert (progress["images"], progress["stage"], progress["stage_images"]) == (128, 1, 96)

    _plain_loss(monkeypatch)
    assert main(["distill", "--resume", str(part), "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 192
    (a, art_a), (b, art_b) = _weights(full), _weights(part)
    assert a.keys() == b.keys() and any(k.startswith("net.student.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert art_a == art_b and load_generator(part).meta["sample"]["steps"] == 1
    # the same log lines, each with its stage (a resumed run's first window is shorter: its own steps only)
    lines = {r: [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (full, part)}
    where = {r: [(x["step"], x["stage"], x["student_steps"]) for x in lines[r] if "loss" in x] for r in lines}
    assert where[full] == where[part] == [(3, 0, 2), (6, 0, 2), (9, 1, 1), (12, 1, 1)]
    assert all(np.isfinite(x["loss"]) and x["images_per_second"] > 0 for x in lines[full] if "loss" in x)


def test_a_killed_distillation_resumes_from_its_last_checkpoint_exactly(teacher, uninterrupted, tmp_path,
                                                                        monkeypatch):
    """Checkpoints every 48 images, the last at the end of stage 0 (96 images), then the process dies in stage 1
    without a word: resumed from that checkpoint, stage 1 begins as it did in the uninterrupted run."""
    import imagegen.train.distill as distill_module

    def dies(*args, **kwargs):
        dies.calls = getattr(dies, "calls", 0) + 1
        if dies.calls == 8:
            raise RuntimeError("killed")
        return progressive_loss(*args, **kwargs)

    monkeypatch.setattr(distill_module, "progressive_loss", dies)
    monkeypatch.setenv("IMAGEGEN_DEBUG", "1")  # the CLI re-raises the "kill" instead of printing it in one line
    run = tmp_path / "killed"
    argv = ["distill", str(teacher), "--out", str(run), "--images", "192", *TINY_DISTILL]
    with pytest.raises(RuntimeError, match="killed"):
        main(argv + ["--set", "train.checkpoint_images=48"])
    progress = json.loads((run / "state.json").read_text())["progress"]
    assert (progress["images"], progress["stage"]) == (96, 0)  # stage 0 done; stage 1 not begun
    _plain_loss(monkeypatch)
    assert main(["distill", "--resume", str(run), "--no-progress"]) == 0
    (a, art_a), (b, art_b) = _weights(uninterrupted), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and art_a == art_b


def test_resume_takes_only_a_budget_and_the_run_it_continues(teacher, tmp_path, capsys, monkeypatch):
    run = tmp_path / "student"
    _signal_at(monkeypatch, 1)
    assert main(["distill", str(teacher), "--out", str(run), "--images", "64", *TINY_DISTILL]) == 130
    capsys.readouterr()
    for argv, says in [(["--steps", "2"], "--steps cannot be given with --resume"),
                       (["--set", "train.lr=1"], "--set cannot be given with --resume"),
                       ([str(teacher)], "continues that distillation with its own teacher")]:
        assert main(["distill", "--resume", str(run), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("imagegen: error: ") and err.count("\n") == 1 and says in err, err
    assert main(["distill", "--steps", "2"]) == 2
    assert "distill needs the teacher: a flow run directory or its model.json (or --resume RUN)" in (
        capsys.readouterr().err)
    # a distillation is resumed by distill, a training run by train: one line naming the right command
    assert main(["train", "--resume", str(run)]) == 2
    assert capsys.readouterr().err == (f"imagegen: error: {run} is a distillation run, not a training run; continue "
                                       f"it with: imagegen distill --resume {run}\n")
    assert main(["distill", "--resume", str(teacher)]) == 2
    assert capsys.readouterr().err == (f"imagegen: error: {teacher} is a training run, not a distillation run; "
                                       f"continue it with: imagegen train --resume {teacher}\n")
    _plain_loss(monkeypatch)
    assert main(["distill", "--resume", str(run), "--images", "96", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 96  # the new total budget


def test_a_non_finite_loss_in_distillation_is_skipped_and_a_run_of_them_stops_it(teacher, tmp_path, capsys,
                                                                                monkeypatch):
    import imagegen.train.distill as distill_module

    def nan_at(bad):
        calls = {"n": 0}

        def loss(*args, **kwargs):
            calls["n"] += 1
            out = progressive_loss(*args, **kwargs)
            return out * float("nan") if bad(calls["n"]) else out

        monkeypatch.setattr(distill_module, "progressive_loss", loss)

    nan_at(lambda n: n in (2, 3))  # two bad steps: skipped, counted, and the run goes on
    run = tmp_path / "skips"
    assert main(["distill", str(teacher), "--out", str(run), "--images", "128", *TINY_DISTILL, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 128 and result["bad_steps"] == 0
    student = load_file(run / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in student.values())

    nan_at(lambda n: n > 2)  # from the third step on: stopped after max_bad_steps, the checkpoint before intact
    run = tmp_path / "stops"
    argv = ["distill", str(teacher), "--out", str(run), "--images", "128", *TINY_DISTILL,
            "--set", "train.checkpoint_images=32"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "5 training steps in a row had a non-finite loss or gradient" in err
    saved = json.loads((run / "state.json").read_text())["progress"]  # skipped steps leave the weights as they were
    assert f"its last checkpoint ({saved['images']} images) is intact" in err and saved["images"] < 128, err
    assert all(torch.isfinite(v).all() for v in load_file(run / "state.safetensors").values())
    _plain_loss(monkeypatch)
    assert main(["distill", "--resume", str(run), "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 128


def _pair_files(teacher):
    return sorted((teacher / "pairs").glob("*.safetensors"))


def test_reflow_pairs_are_keyed_by_the_teachers_weights_and_the_settings_that_draw_them(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from imagegen.train.distill import teacher_digest

    teacher = tmp_path / "teacher"
    loop.train(tiny_config(images=64), teacher, show_progress=False, log=lambda s: None)
    reflow = ["distill", str(teacher), "--method", "reflow", "--steps", "1", "--images", "32", "--set",
              "train.batch_size=16", "--set", "train.bf16=false", "--no-progress", "--pairs", "20"]
    assert main(reflow + ["--out", str(tmp_path / "a")]) == 0
    assert "drawing 20 (noise, image) pairs" in capsys.readouterr().out
    (first,) = _pair_files(teacher)
    with safe_open(str(first), "np") as f:
        settings = json.loads(f.metadata()["settings"])
        images = f.get_tensor("images")
    assert settings["teacher"] == teacher_digest(teacher) and settings["pairs"] == 20 and images.shape[0] == 20
    assert main(reflow + ["--out", str(tmp_path / "b")]) == 0  # the same teacher and settings: reused
    assert f"reusing the teacher's pairs in {first}" in capsys.readouterr().out
    assert main(reflow + ["--out", str(tmp_path / "c"), "--seed", "1"]) == 0  # other settings: drawn again
    assert "drawing 20" in capsys.readouterr().out and len(_pair_files(teacher)) == 2

    # the same file names, other weights (a teacher trained on, or retrained): its pairs are never reused
    before = set(_pair_files(teacher))
    weights = load_file(teacher / "model.safetensors")
    save_file({k: v + 0.05 if v.is_floating_point() else v for k, v in weights.items()},
              str(teacher / "model.safetensors"))
    assert main(reflow + ["--out", str(tmp_path / "d")]) == 0
    assert "drawing 20" in capsys.readouterr().out and len(_pair_files(teacher)) == 3
    (new,) = set(_pair_files(teacher)) - before
    with safe_open(str(new), "np") as f:
        assert not np.array_equal(f.get_tensor("images"), images)  # the changed teacher draws other images


def test_a_resumed_distillation_refuses_a_changed_teacher(teacher, tmp_path, capsys, monkeypatch):
    import shutil

    own = tmp_path / "teacher"
    shutil.copytree(teacher, own, ignore=shutil.ignore_patterns("pairs"))
    run = tmp_path / "student"
    _signal_at(monkeypatch, 1)
    assert main(["distill", str(own), "--out", str(run), "--images", "64", *TINY_DISTILL]) == 130
    _plain_loss(monkeypatch)
    (own / "model.json").write_text((own / "model.json").read_text().replace('"images": 96', '"images": 97'))
    assert main(["distill", "--resume", str(run)]) == 1
    assert "has changed since this distillation began" in capsys.readouterr().err


def test_old_distill_settings_are_refused_with_where_they_moved(teacher, tmp_path, capsys):
    old = tmp_path / "old.toml"
    old.write_text('method = "reflow"\nlr = 1e-4\n')
    out = tmp_path / "student"
    assert main(["distill", str(teacher), "--config", str(old), "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("imagegen: error: config key lr moved to train.lr: distillation shares "
                                       "imagegen train's training settings (in a config file: lr under [train]; on "
                                       "the command line: --set train.lr=...)\n")
    assert main(["distill", str(teacher), "--set", "batch_size=16", "--out", str(out)]) == 2
    assert "config key batch_size moved to train.batch_size" in capsys.readouterr().err
    assert {"minutes", "lr", "batch_size", "bf16"} <= set(DistillConfig.MOVED)
    # the training settings a distillation cannot honour are refused, not ignored
    for key, says in [("train.flip=true", "train.flip is not read by distillation"),
                      ("train.eval_samples=100", "train.eval_samples is not read by distillation"),
                      ("train.class_balance=0.5", "train.class_balance is not read by distillation")]:
        assert main(["distill", str(teacher), "--set", key, "--out", str(out)]) == 2
        assert says in capsys.readouterr().err and not out.exists()
    # distillation's own defaults where a file gives only some of the train section
    (tmp_path / "new.toml").write_text("[train]\nlr = 1e-4\n")
    loaded = load(DistillConfig, tmp_path / "new.toml")
    assert (loaded.train.lr, loaded.train.minutes, loaded.train.ema_half_life_images) == (1e-4, 10.0, 2_000)
