"""Every trainer learns, and every trainer resumes exactly: the per-method step lowers its loss on a tiny fixed
batch, and a run trained to N images in one go equals one trained to N/2 and resumed to N, weight for weight and
metric for metric. The EMA averages BatchNorm statistics as it averages weights."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from imagegen.cli import main
from imagegen.data import load_dataset
from imagegen.pixels import to_float
from imagegen.train import checkpoint, loop, recipes
from imagegen.train.ema import ema_update, make_ema, recompute_bn

from .test_train import TINY, TINY_LATENT, StopAfter, tiny_config

METHODS = ("flow", "edm", "gan", "vae")
FAST = ["train.bf16=false"]  # float32 on every machine, so the runs compute alike anywhere (test_train.py tests bf16)
TIMING = {"seconds", "images_per_second"}  # wall-clock measurements: the only numbers a resumed run may change


@pytest.fixture(scope="module")
def batch():
    """A fixed batch: the first 16 digits (8x8, two of most classes) as floats in [-1, 1], and their labels."""
    ds = load_dataset("digits", "train")
    return to_float(torch.from_numpy(ds.images[:16])), torch.from_numpy(ds.labels[:16]).long()


def networks(method, **extra):
    cfg = tiny_config(method, **{"train.warmup_images": 0, **extra})
    torch.manual_seed(0)
    nets = recipes.build_networks(recipes.network_configs(cfg, (1, 8, 8), 10))
    return cfg, nets, recipes.build_optimizers(cfg, nets)


def steps(cfg, nets, opts, batch, n):
    """n steps of the method's own train_step on one batch; the noise draws cycle through four fixed seeds, so
    steps k and k + 4 see the same objective."""
    x, y = batch
    out = []
    for i in range(n):
        stats = recipes.train_step(cfg, nets, opts, x, y, torch.Generator().manual_seed(i % 4), 10)
        assert stats is not None, f"step {i} was skipped as non-finite"
        out.append(stats)
    return out


@pytest.mark.parametrize("method, n, factor", [("flow", 48, 0.5), ("edm", 48, 0.65), ("vae", 48, 0.5)])
def test_the_step_of_each_likelihood_trainer_lowers_its_loss_on_a_fixed_batch(batch, method, n, factor):
    cfg, nets, opts = networks(method)
    losses = [s["loss"] for s in steps(cfg, nets, opts, batch, n)]
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])  # the same four noise draws at both ends
    assert np.isfinite(losses).all() and last < factor * first, (first, last)


def test_the_gan_step_trains_its_discriminator_and_moves_its_generator_to_the_data(batch):
    """A GAN's losses are a game, not a descent; what must fall is the discriminator's loss (it learns to tell the
    batch from fakes: below 2 log 2, chance) and the distance between the generator's images and the batch."""
    cfg, nets, opts = networks("gan")
    x, y = batch
    z = torch.randn(len(x), nets["generator"].z_dim, generator=torch.Generator().manual_seed(9))

    def gap():  # per-pixel mean of the fakes against that of the batch, and the same for the spread
        with torch.no_grad():
            fake = nets["generator"](z, y)
        return ((fake.mean(0) - x.mean(0)).norm() + (fake.std(0) - x.std(0)).norm()).item()

    before = gap()
    stats = steps(cfg, nets, opts, batch, 80)
    assert gap() < 0.6 * before, (before, gap())
    assert np.mean([s["loss_d"] for s in stats[:4]]) > np.mean([s["loss_d"] for s in stats[-10:]])
    assert min(s["loss_d"] for s in stats) < 2 * np.log(2)


def run_argv(method, images, out):
    """`imagegen train` of a tiny run at a constant learning rate (a cosine schedule depends on the budget, which a
    resumed run may extend), with a line in metrics.jsonl every 3 steps; a UNet's guide at 10% of the budget, which
    for 96 and 192 images is the first step's EMA either way (a run resumed with a larger budget keeps the guide of
    its first one)."""
    unet = method in ("flow", "edm")
    sets = (TINY if unet else TINY_LATENT) + ["train.schedule=constant", "train.log_every=3", *FAST] + \
        (["train.guide_fraction=0.1"] if unet else [])
    return ["train", "--method", method, "--dataset", "digits", "--images", str(images), "--batch-size", "32",
            "--out", str(out), "--no-progress", *[a for s in sets for a in ("--set", s)]]


def same_state(a, b):
    """Assert that two run directories hold identical training states, artifacts and final grids."""
    _, ta = checkpoint.load_state(a)
    _, tb = checkpoint.load_state(b)
    assert sorted(ta) == sorted(tb)
    assert [k for k in ta if not torch.equal(ta[k], tb[k])] == []  # weights, EMA, optimiser moments, RNG states
    ma, mb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(ma) == sorted(mb) and all(torch.equal(ma[k], mb[k]) for k in ma)
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
    assert {k: v for k, v in ra.items() if k not in TIMING | {"out", "grid"}} == \
        {k: v for k, v in rb.items() if k not in TIMING | {"out", "grid"}}
    assert (a / "grid.png").read_bytes() == (b / "grid.png").read_bytes()
    if (a / "guide.safetensors").exists() or (b / "guide.safetensors").exists():  # drawn with the same guide
        ga, gb = load_file(a / "guide.safetensors"), load_file(b / "guide.safetensors")
        assert sorted(ga) == sorted(gb) and all(torch.equal(ga[k], gb[k]) for k in ga)


def metrics(run):
    """metrics.jsonl's log lines (not the grid's FID lines: a resumed run draws a grid where it resumes) without
    their wall-clock numbers."""
    return [{k: v for k, v in line.items() if k not in TIMING}
            for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "step" in line]


@pytest.mark.parametrize("method", METHODS)
def test_half_a_run_resumed_to_the_end_equals_the_whole_run(tmp_path, method, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(run_argv(method, 192, full)) == 0
    assert main(run_argv(method, 96, part)) == 0
    assert json.loads((part / "results.json").read_text())["images"] == 96
    assert main(["train", "--resume", str(part), "--images", "192", "--no-progress"]) == 0
    capsys.readouterr()
    same_state(full, part)
    assert metrics(full) == metrics(part) and [x["step"] for x in metrics(full)] == [3, 6]


def stopped_and_resumed(tmp_path, method):
    """The same run trained in one go, and stopped after step 7 of 10 (lines every 5 steps) then resumed."""
    quiet = {"show_progress": False, "log": lambda s: None}
    cfg = tiny_config(method, **{"train.bf16": "false"})
    loop.train(cfg, tmp_path / "full", **quiet)
    part = loop.train(tiny_config(method, **{"train.bf16": "false"}), tmp_path / "part", stop=StopAfter(6), **quiet)
    assert part["interrupted"] and part["images"] == 7 * 32
    loop.train(None, tmp_path / "part", resume=True, **quiet)
    return tmp_path / "full", tmp_path / "part"


@pytest.mark.parametrize("method", ["gan", "vae"])
def test_a_run_stopped_between_two_log_lines_resumes_to_the_same_weights(tmp_path, method):
    same_state(*stopped_and_resumed(tmp_path, method))


def test_a_run_stopped_between_two_log_lines_logs_the_same_metrics(tmp_path):
    full, part = stopped_and_resumed(tmp_path, "vae")
    assert metrics(full) == metrics(part)


def test_ema_averages_floating_buffers_and_copies_counters():
    net = nn.BatchNorm1d(3)
    ema = make_ema(net)
    with torch.no_grad():
        net.running_mean.fill_(1.0)
        net.running_var.fill_(3.0)
        net.num_batches_tracked.fill_(7)
        net.weight.fill_(2.0)
    ema_update(ema, net, beta=0.75)
    torch.testing.assert_close(ema.running_mean, torch.full((3,), 0.25))  # 0.75 * 0 + 0.25 * 1
    torch.testing.assert_close(ema.running_var, torch.full((3,), 1.5))  # 0.75 * 1 + 0.25 * 3
    torch.testing.assert_close(ema.weight, torch.full((3,), 1.25))  # buffers and weights alike
    assert ema.num_batches_tracked.item() == 7 and ema.num_batches_tracked.dtype == torch.long
    ema_update(ema, net, beta=0.75, buffers="copy")  # the old rule: the live network's statistics as they are
    assert torch.equal(ema.running_mean, net.running_mean) and torch.equal(ema.running_var, net.running_var)
    torch.testing.assert_close(ema.weight, torch.full((3,), 1.4375))
    with pytest.raises(ValueError, match="unknown EMA buffer rule 'mean'; choose one of average, copy"):
        ema_update(ema, net, beta=0.5, buffers="mean")


def test_the_gan_artifact_holds_averaged_batchnorm_statistics_not_the_live_ones(tmp_path):
    cfg = tiny_config("gan", images=192, **{"train.bf16": "false"})
    loop.train(cfg, tmp_path / "gan", show_progress=False, log=lambda s: None)
    _, state = checkpoint.load_state(tmp_path / "gan")
    art = load_file(tmp_path / "gan" / "model.safetensors")
    stats = [k for k in art if k.endswith(("running_mean", "running_var"))]
    assert len(stats) >= 2  # mean and variance of each ClassBatchNorm (one at 8x8)
    live = {k: state[f"net.generator.{k}"] for k in art}
    assert all(not torch.allclose(art[k], live[k]) for k in stats)  # "copy" would make them equal
    assert all(torch.equal(art[k], live[k]) for k in art if k.endswith("num_batches_tracked"))


def test_recompute_bn_sets_the_plain_average_of_the_batches_statistics():
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, momentum=0.3)).eval()
    batches = [torch.randn(8, 2, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    recompute_bn(net, [(b,) for b in batches])
    with torch.no_grad():
        h = [net[0](b) for b in batches]
    torch.testing.assert_close(net[1].running_mean, torch.stack([v.mean(0) for v in h]).mean(0))
    torch.testing.assert_close(net[1].running_var, torch.stack([v.var(0) for v in h]).mean(0))  # unbiased, as BN
    assert net[1].momentum == 0.3 and not net.training and net[1].num_batches_tracked.item() == 3
    g = make_ema(recipes.build_networks(recipes.network_configs(tiny_config("gan"), (1, 8, 8), 10))["generator"])
    y = torch.arange(16) % 10
    recompute_bn(g, [(torch.randn(16, g.z_dim), y)])
    assert all(m.num_batches_tracked.item() == 1 for m in g.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d))
