"""The generator trainer and `imagegen train` / `imagegen sample` on tiny models (8x8 digits, a few steps)."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imagegen.cli import main
from imagegen.config import GenConfig, load
from imagegen.errors import ImagegenError, UsageError
from imagegen.sampling import generate, load_generator, run_settings
from imagegen.train import loop, order, runloop

TINY = ["model.channels=8,16", "model.attention=false,true", "train.warmup_images=64", "train.log_every=5",
        "train.eval_samples=0", "sample.steps=2", "sample.batch_size=50"]
# a GAN or a VAE reads neither the UNet's settings (its model section has widths of its own) nor the sampler's
TINY_LATENT = ["model.width=8", "model.z_dim=8"] + [s for s in TINY if s.startswith(("train.", "sample.batch"))]


def tiny_config(method="flow", images=320, **extra) -> GenConfig:
    sets = (TINY if method in ("flow", "edm") else TINY_LATENT) + [f"{k}={v}" for k, v in extra.items()]
    return load(GenConfig, overrides=sets, flags={"data.dataset": "digits", "method.name": method,
                                                  "train.images": images, "train.batch_size": 32})


class StopAfter:
    """A stop request that fires after `n` checks, as Ctrl-C would between two steps."""

    def __init__(self, n):
        self.n, self.requested = n, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def __getattribute__(self, name):
        if name == "requested":
            object.__setattr__(self, "n", object.__getattribute__(self, "n") - 1)
            return object.__getattribute__(self, "n") < 0
        return object.__getattribute__(self, name)


def test_resumed_run_reaches_the_same_weights_as_an_uninterrupted_one(tmp_path):
    full = loop.train(tiny_config(), tmp_path / "full", show_progress=False, log=lambda s: None)
    part = loop.train(tiny_config(), tmp_path / "part", show_progress=False, log=lambda s: None, stop=StopAfter(4))
    assert part["interrupted"] and part["images"] == 5 * 32
    resumed = loop.train(None, tmp_path / "part", resume=True, show_progress=False, log=lambda s: None)
    assert resumed["images"] == full["images"] == 320
    a, b = load_file(tmp_path / "full" / "state.safetensors"), load_file(tmp_path / "part" / "state.safetensors")
    weights = [k for k in a if k.startswith(("net.", "ema.", "optim."))]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)
    assert (tmp_path / "part" / "grid.png").is_file() and (tmp_path / "part" / "model.json").is_file()
    lines = [x for x in map(json.loads, (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()) if "step" in x]
    assert [x["step"] for x in lines] == [5, 10] and all(x["loss"] > 0 and x["images_per_second"] > 0 for x in lines)


def test_sigterm_becomes_a_stop_request():
    with loop.StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_ctrl_c_swallowed_during_start_up_still_stops_the_run_before_its_first_step(tmp_path, monkeypatch):
    from imagegen import interrupts

    monkeypatch.setattr(interrupts, "_seen", False)  # and back to False after the test
    before = signal.getsignal(signal.SIGINT)
    interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):  # the handler raises as Python's own does...
            os.kill(os.getpid(), signal.SIGINT)
        assert interrupts.requested()
        # ... and a library that swallowed it cannot make the stop disappear: the loop ends before any step
        with pytest.raises(KeyboardInterrupt):
            loop.train(tiny_config(), tmp_path / "run", show_progress=False, log=lambda s: None)
        assert not (tmp_path / "run" / "state.json").exists()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)


def test_an_existing_run_is_never_overwritten_without_asking(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ImagegenError, match="--overwrite"):
        loop.train(tiny_config(), run, show_progress=False, log=lambda s: None)
    assert (run / "notes.txt").read_text() == "mine"
    with pytest.raises(ImagegenError, match="no training checkpoint"):
        loop.train(None, tmp_path / "nothing", resume=True, show_progress=False, log=lambda s: None)


def test_non_finite_steps_stop_the_run_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(loop.recipes, "train_step", lambda *a, **k: None)
    with pytest.raises(ImagegenError, match="5 training steps in a row had a non-finite loss"):
        loop.train(tiny_config(), tmp_path / "run", show_progress=False, log=lambda s: None)


def test_nan_loss_skips_the_step_and_leaves_weights_finite(tmp_path):
    cfg = tiny_config(images=64)
    nets = {"net": torch.nn.Linear(2, 2)}
    before = nets["net"].weight.clone()
    opts = {"net": torch.optim.SGD(nets["net"].parameters(), 0.1)}
    loss = nets["net"](torch.tensor([[float("nan"), 1.0]])).sum()
    assert not loop.recipes.update(loss, opts["net"], nets["net"], cfg.train.grad_clip)
    assert torch.equal(nets["net"].weight, before)


def test_lr_warms_up_then_decays_to_zero():
    cfg = tiny_config().train
    assert runloop.lr_at(0, 0.0, cfg) < runloop.lr_at(cfg.warmup_images, 0.1, cfg) <= cfg.lr
    assert runloop.lr_at(10**6, 1.0, cfg) == pytest.approx(0.0, abs=1e-12)


def test_batches_cover_each_epoch_once_and_depend_only_on_position():
    n = 50
    idx = order.batch_indices(3, n, 0, 2 * n)
    assert sorted(idx[:n]) == list(range(n)) and sorted(idx[n:]) == list(range(n))
    assert np.array_equal(order.batch_indices(3, n, 40, 20), idx[40:60])


def test_class_balance_evens_out_classes_in_the_training_order():
    labels = np.repeat([0, 1, 2], [800, 150, 50])  # imbalanced, as a user's folder is
    assert order.class_weights(labels, 0.0) is None  # the data as it is: a permutation per epoch
    drawn = {}
    for balance in (0.5, 1.0):
        weights = order.class_weights(labels, balance)
        assert weights.sum() == pytest.approx(1.0)
        idx = order.batch_indices(3, len(labels), 0, 20_000, weights)
        drawn[balance] = np.bincount(labels[idx], minlength=3) / len(idx)
        assert np.array_equal(order.batch_indices(3, len(labels), 700, 500, weights), idx[700:1200])  # resumable
    sqrt = np.sqrt([800, 150, 50])
    assert np.allclose(drawn[0.5], sqrt / sqrt.sum(), atol=0.02)  # in proportion to the square root of the count
    assert np.allclose(drawn[1.0], 1 / 3, atol=0.02)  # every class alike
    per_image = np.bincount(idx, minlength=len(labels))  # balance 1: each rare image drawn 16x as often
    assert per_image[950:].min() > 0 and 12 < per_image[950:].mean() / per_image[:800].mean() < 20
    with pytest.raises(UsageError, match="train.class_balance"):
        load(GenConfig, overrides=["train.class_balance=1.5"])


def test_class_balance_trains_a_run_that_draws_rare_classes_more_often(tmp_path):
    cfg = tiny_config(images=64)
    cfg.train.class_balance = 1.0
    result = loop.train(cfg, tmp_path / "run", show_progress=False, log=lambda s: None)
    assert result["images"] >= 64
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["class_balance"] == 1.0


@pytest.mark.parametrize("method", ["edm", "gan", "vae"])
def test_every_method_trains_and_samples(tmp_path, method):
    # 6 steps: after 4, edm's classes moved a pixel by a grey level for some noise seeds and none for others
    result = loop.train(tiny_config(method, images=192), tmp_path / method, show_progress=False, log=lambda s: None)
    assert result["images"] == 192 and np.isfinite(result["images_per_second"])
    gen = load_generator(tmp_path / method)
    images = generate(gen, np.array([0, 1, 2]), seed=0, steps=2)
    assert images.shape == (3, 1, 8, 8) and images.dtype == np.uint8
    assert np.array_equal(images, generate(gen, np.array([0, 1, 2]), seed=0, steps=2))  # (seed, i) fixes image i
    # the same noise, other classes: after 6 steps a class moves some pixels by a grey level or more, not all
    assert not np.array_equal(images, generate(gen, np.array([5, 6, 7]), seed=0, steps=2))


def test_the_gan_discriminator_trains_at_its_own_learning_rate(tmp_path):
    cfg = tiny_config("gan", images=96, **{"method.d_lr_scale": 4, "train.warmup_images": 0})
    loop.train(cfg, tmp_path / "gan", show_progress=False, log=lambda s: None)
    groups = json.loads((tmp_path / "gan" / "state.json").read_text())["param_groups"]
    lr_g, lr_d = groups["generator"][0]["lr"], groups["discriminator"][0]["lr"]
    assert 0 < lr_g < cfg.train.lr and lr_d == pytest.approx(4 * lr_g)  # cosine decay, then the scale
    with pytest.raises(UsageError, match="method.d_lr_scale must be > 0; got 0.0"):
        tiny_config("gan", **{"method.d_lr_scale": 0})
    with pytest.raises(UsageError, match="model.gan_conditioning must be one of norm, add; got 'concat'"):
        tiny_config("gan", **{"model.gan_conditioning": "concat"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "flow"
    os.environ["IMAGEGEN_PROGRESS"] = "0"
    loop.train(tiny_config(images=96), run, show_progress=False, log=lambda s: None)
    return run


def test_image_i_depends_only_on_seed_and_i(trained):
    gen = load_generator(trained)
    labels = np.arange(7) % 10
    a = generate(gen, labels, seed=5, steps=3, sampler="dpmpp-2m", batch_size=7)
    b = generate(gen, labels, seed=5, steps=3, sampler="dpmpp-2m", batch_size=2)
    c = generate(gen, labels[3:], seed=5, start=3, steps=3, sampler="dpmpp-2m")
    d = generate(gen, labels, seed=6, steps=3, sampler="dpmpp-2m")
    assert np.array_equal(a, b) and np.array_equal(a[3:], c) and not np.array_equal(a, d)


def test_guidance_interval_everywhere_is_plain_guidance_and_nowhere_is_none(trained):
    gen = load_generator(trained)
    labels, kw = np.arange(5), {"seed": 1, "steps": 4, "sampler": "dpmpp-2m"}
    guided_all = generate(gen, labels, guidance=30.0, **kw)  # a tiny model: a big scale to see a difference
    assert np.array_equal(generate(gen, labels, guidance=30.0, guidance_interval=(0, float("inf")), **kw),
                          guided_all)
    unguided = generate(gen, labels, guidance=1.0, **kw)
    assert np.array_equal(generate(gen, labels, guidance=30.0, guidance_interval=(500, 1000), **kw), unguided)
    partly = generate(gen, labels, guidance=30.0, guidance_interval=(0.5, 20), **kw)
    assert not np.array_equal(partly, guided_all) and not np.array_equal(partly, unguided)


def test_guidance_interval_setting_is_read_from_config_and_run(trained, tmp_path):
    assert load(GenConfig, overrides=["sample.guidance_interval=0.3,5"]).sample.guidance_interval == (0.3, 5.0)
    assert load(GenConfig, overrides=["sample.guidance_interval=none"]).sample.guidance_interval is None
    (tmp_path / "c.toml").write_text("[sample]\nguidance_interval = [0.2, 3]\n")
    assert load(GenConfig, tmp_path / "c.toml").sample.guidance_interval == (0.2, 3.0)
    with pytest.raises(UsageError, match="guidance_interval"):
        load(GenConfig, overrides=["sample.guidance_interval=a,b"])
    gen = load_generator(trained)
    assert run_settings(gen)["guidance_interval"] == GenConfig().sample.guidance_interval  # the run's own setting
    gen.meta["sample"]["guidance_interval"] = None  # runs from before the setting existed: guidance everywhere
    assert run_settings(gen)["guidance_interval"] == (0.0, float("inf"))
    gen.meta["sample"]["guidance_interval"] = [0.5, 20.0]
    assert run_settings(gen)["guidance_interval"] == (0.5, 20.0)
    assert run_settings(gen, guidance_interval=(1, 2))["guidance_interval"] == (1, 2)


def test_sample_cli_writes_npz_and_grid_and_repeats_exactly(trained, tmp_path, capsys):
    out = tmp_path / "s.npz"
    args = ["sample", str(trained), "--n", "12", "--steps", "2", "--sampler", "euler", "--guidance", "2",
            "--class", "3", "--out", str(out), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    first = np.load(out)
    assert first["images"].shape == (12, 1, 8, 8) and set(first["labels"]) == {3}
    assert result["steps"] == 2 and result["guidance"] == 2 and out.with_suffix(".png").is_file()
    assert main(args) == 1 and "exists" in capsys.readouterr().err  # no silent overwrite
    assert main(args + ["--overwrite", "--batch-size", "5"]) == 0
    assert np.array_equal(np.load(out)["images"], first["images"])


def test_autoguidance_guides_with_the_runs_own_early_ema(tmp_path, capsys):
    logs, run = [], tmp_path / "ag"
    cfg = tiny_config(images=192, **{"train.guide_fraction": 0.5, "sample.autoguidance": 2.0})
    loop.train(cfg, run, show_progress=False, log=logs.append)
    meta = json.loads((run / "guide.json").read_text())["meta"]
    assert meta["images"] == 96 and meta["sample"]["autoguidance"] == 1.0  # batch 32: half of 192 at step 3
    assert any("guide for autoguidance written at 96 images" in line for line in logs)
    gen, guide = load_generator(run, backend="torch"), load_generator(run / "guide.json", backend="torch")
    assert run_settings(gen)["autoguidance"] == 2.0
    labels, kw = np.arange(5), {"seed": 1, "steps": 3, "sampler": "dpmpp-2m", "guidance": 1.0}
    plain, auto = generate(gen, labels, autoguidance=1.0, **kw), generate(gen, labels, autoguidance=2.0, **kw)
    assert not np.array_equal(plain, auto)
    # weight 0 is the guide alone (D + (0 - 1) (D - G) = G): the guide is the EMA at 96 images, not the model
    alone = generate(gen, labels, autoguidance=0.0, **kw).astype(int)
    assert np.abs(alone - generate(guide, labels, **kw)).max() <= 1 and not np.array_equal(alone, plain)
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "5", "--steps", "3", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["autoguidance"] == 2.0  # the run's own weight
    assert main(["sample", str(run), "--n", "5", "--steps", "3", "--autoguidance", "1", "--out",
                 str(tmp_path / "one.npz")]) == 0
    assert not np.array_equal(np.load(out)["images"], np.load(tmp_path / "one.npz")["images"])


def test_autoguidance_leaves_out_the_levels_outside_its_interval(trained, tmp_path, capsys):
    from imagegen.sampling.generator import sigmas_for

    gen = load_generator(trained, backend="torch")
    assert run_settings(gen)["autoguidance_interval"] == (0.0, 10.0)  # the default: not at the pure-noise levels
    assert sigmas_for(gen, 3)[0] > 10 >= sigmas_for(gen, 3)[1]  # so the first of 3 steps is not autoguided
    labels, kw = np.arange(5), {"steps": 3, "sampler": "dpmpp-2m", "guidance": 1.0, "autoguidance": 2.0}
    default = generate(gen, labels, seed=1, **run_settings(gen, **kw))
    every = generate(gen, labels, seed=1, **run_settings(gen, **kw, autoguidance_interval=(0.0, float("inf"))))
    never = generate(gen, labels, seed=1, **run_settings(gen, **kw, autoguidance_interval=(50.0, 100.0)))
    plain = generate(gen, labels, seed=1, **run_settings(gen, **{**kw, "autoguidance": 1.0}))
    assert not np.array_equal(default, every) and not np.array_equal(default, plain)
    assert np.array_equal(never, plain)  # an interval between the levels drawn: no step is autoguided
    del gen.meta["sample"]["autoguidance_interval"]  # a run saved before the setting: at every level, as then
    assert run_settings(gen)["autoguidance_interval"] == (0.0, float("inf"))
    out = tmp_path / "every.npz"
    assert main(["sample", str(trained), "--n", "5", "--steps", "3", "--seed", "1", "--guidance", "1",
                 "--autoguidance", "2", "--autoguidance-interval", "0,inf", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["autoguidance_interval"] is None  # JSON's "every level"
    assert np.array_equal(np.load(out)["images"], every)
    code = main(["sample", str(trained), "--autoguidance-interval", "3,1", "--out", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "--autoguidance-interval 3,1: a guidance interval needs 0 <= lo < hi" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad.npz").exists()


def test_a_resumed_run_writes_the_same_guide(tmp_path):
    cfg = lambda: tiny_config(images=192, **{"train.guide_fraction": 0.5})  # noqa: E731
    loop.train(cfg(), tmp_path / "full", show_progress=False, log=lambda s: None)
    part = loop.train(cfg(), tmp_path / "part", show_progress=False, log=lambda s: None, stop=StopAfter(1))
    assert part["interrupted"] and part["images"] == 64 and not (tmp_path / "part" / "guide.json").exists()
    loop.train(None, tmp_path / "part", resume=True, show_progress=False, log=lambda s: None)
    a, b = (load_file(tmp_path / r / "guide.safetensors") for r in ("full", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_autoguidance_without_a_guide_is_refused_in_one_line(trained, tmp_path, capsys):
    plain = tmp_path / "plain"  # a run that keeps no guide (as runs before autoguidance)
    loop.train(tiny_config(images=64, **{"train.guide_fraction": 0.0, "sample.autoguidance": 1.0}), plain,
               show_progress=False, log=lambda s: None)
    assert not (plain / "guide.json").exists() and (trained / "guide.json").is_file()  # the default keeps one
    code = main(["sample", str(plain), "--autoguidance", "2", "--out", str(tmp_path / "a.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "guide.json" in err and "train.guide_fraction" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.npz").exists()
    with pytest.raises(UsageError, match="train.guide_fraction"):  # before any training
        loop.train(tiny_config(**{"sample.autoguidance": 2.0, "train.guide_fraction": 0.0}), tmp_path / "r",
                   show_progress=False,
                   log=lambda s: None)
    assert not (tmp_path / "r").exists()
    with pytest.raises(UsageError, match="sample.autoguidance is a flow and edm setting"):
        tiny_config("gan", **{"sample.autoguidance": 2.0})
    for bad in ("-1", "nan"):
        code = main(["sample", str(trained), "--autoguidance", bad, "--out", str(tmp_path / "b.npz")])
        assert code == 2 and "autoguidance" in capsys.readouterr().err


def test_sample_cli_writes_pngs_by_class_that_eval_can_read(trained, tmp_path, capsys):
    from imagegen.metrics.samples import load_samples

    assert main(["sample", str(trained), "--n", "4", "--out", str(tmp_path / "pngs")]) == 0
    images, labels = load_samples(tmp_path / "pngs")
    assert images.shape == (4, 1, 8, 8) and sorted(labels.tolist()) == [0, 1, 2, 3]


def test_sample_cli_refuses_impossible_requests(trained, tmp_path, capsys):
    code = main(["sample", str(trained), "--class", "10", "--out", str(tmp_path / "a.npz")])
    assert code == 2 and "class 10 does not exist" in capsys.readouterr().err
    code = main(["sample", str(trained), "--steps", "0", "--out", str(tmp_path / "b.npz")])
    assert code == 2 and "steps must be >= 1" in capsys.readouterr().err
    for bad in ("5,1", "x,2", "1"):
        code = main(["sample", str(trained), "--guidance-interval", bad, "--out", str(tmp_path / "c.npz")])
        assert code == 2 and "guidance-interval" in capsys.readouterr().err
    (tmp_path / "x.pt").write_bytes(b"\x80\x04K\x01.")
    code = main(["sample", str(tmp_path / "x.pt")])
    assert code == 1 and "not an imagegen checkpoint" in capsys.readouterr().err


def test_train_cli_runs_and_resume_extends_the_budget(tmp_path, capsys):
    run = tmp_path / "cli"
    base = ["train", "--dataset", "digits", "--images", "64", "--batch-size", "32", "--out", str(run), "--json"]
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(base + sets) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 64
    assert main(base + sets) == 1 and "--overwrite" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--images", "128", "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 128
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"  # was "auto": --device may change


def test_bad_unet_settings_are_refused_before_the_run_directory_exists(tmp_path):
    with pytest.raises(UsageError, match="model.patch must be >= 1; got 0"):
        tiny_config(**{"model.patch": 0})
    with pytest.raises(UsageError, match=r"model.attention needs one flag per level \(2\), got 1"):
        loop.train(tiny_config(**{"model.attention": "true"}), tmp_path / "bad-unet", show_progress=False)
    assert not (tmp_path / "bad-unet").exists()


def test_a_unet_without_any_attention_trains_and_says_so_in_its_artifact(tmp_path):
    run = tmp_path / "lean"
    loop.train(tiny_config(images=32, **{"model.attention": "false,false", "model.mid_attention": "false"}), run,
               show_progress=False, log=lambda s: None)
    config = json.loads((run / "model.json").read_text())["config"]
    assert config["attention"] == [False, False] and config["mid_attention"] is False
    gen = load_generator(run, backend="torch")
    assert not any(type(m).__name__ == "Attention" for m in gen.net.modules())
    assert generate(gen, np.arange(2), steps=1, sampler="euler").shape == (2, 1, 8, 8)


def test_bad_settings_are_refused_before_an_old_run_is_touched(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "model.json").write_text("{}")
    for key, value, message in (("guidance_interval", (3.0, 1.0), "sample.guidance_interval"),
                                ("sampler", "rk45", "sample.sampler must be one of euler, heun, dpmpp-2m, ddim")):
        cfg = tiny_config()
        setattr(cfg.sample, key, value)
        with pytest.raises(UsageError, match=message):
            loop.train(cfg, run, overwrite=True, show_progress=False, log=lambda s: None)
        assert (run / "model.json").read_text() == "{}"


def test_overwrite_removes_every_file_of_the_old_run(tmp_path):
    run = tmp_path / "run"
    loop.train(tiny_config(images=64), run, show_progress=False, log=lambda s: None)
    (run / "notes.txt").write_text("mine")
    loop.train(tiny_config(images=32), run, overwrite=True, show_progress=False, log=lambda s: None,
               stop=StopAfter(0))  # stopped after its first step: only what the new run wrote may be there
    assert json.loads((run / "state.json").read_text())["progress"]["images"] == 32
    assert not (run / "results.json").exists() and (run / "notes.txt").read_text() == "mine"


def test_bf16_autocast_trains_with_finite_losses(tmp_path):
    result = loop.train(tiny_config(images=192, **{"train.bf16": "true"}), tmp_path / "bf16", show_progress=False,
                        log=lambda s: None)
    lines = [x for x in map(json.loads, (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()) if "step" in x]
    assert result["bad_steps"] == 0 and lines and all(np.isfinite(x["loss"]) for x in lines)


def test_bf16_auto_follows_the_machine_once_and_a_resumed_run_keeps_the_choice(tmp_path, monkeypatch):
    from imagegen import utils

    for has_units in (True, False):
        monkeypatch.setattr(loop, "has_bf16_units", lambda device, v=has_units: v)
        run = tmp_path / f"units-{has_units}"
        loop.train(tiny_config(images=32), run, show_progress=False, log=lambda s: None)
        assert json.loads((run / "config.json").read_text())["train"]["bf16"] is has_units
        monkeypatch.setattr(loop, "has_bf16_units", lambda device, v=has_units: not v)  # another machine resumes
        loop.train(None, run, resume=True, budget={"images": 64}, show_progress=False, log=lambda s: None)
        assert json.loads((run / "config.json").read_text())["train"]["bf16"] is has_units
    with pytest.raises(UsageError, match="train.bf16 must be one of true, false, auto; got 'sometimes'"):
        tiny_config(**{"train.bf16": "sometimes"})
    # the probe: a CPU has bf16 units when torch reports AVX-512 BF16 or AMX
    for avx, amx in ((True, False), (False, True), (False, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert utils.has_bf16_units(torch.device("cpu")) is (avx or amx)


@pytest.fixture
def old_run(tmp_path, capsys):
    """A finished tiny run made with the CLI, and a snapshot of its files' bytes."""
    run = tmp_path / "old"
    argv = ["train", "--dataset", "digits", "--images", "32", "--batch-size", "32", "--out", str(run), "--no-progress"]
    assert main(argv + [a for s in TINY for a in ("--set", s)]) == 0
    capsys.readouterr()
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert {"model.json", "model.safetensors", "state.json", "state.safetensors", "grid.png"} <= set(files)
    return run, files


def untouched(run, files) -> bool:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files


@pytest.mark.parametrize("argv, code, says", [
    (["--set", "train.schedule=linear"], 2, "train.schedule must be one of cosine, constant; got 'linear'"),
    (["--method", "gan", "--set", "method.gan_loss=wgan"], 2,
     "method.gan_loss must be one of non-saturating, hinge; got 'wgan'"),
    (["--method", "gan", "--set", "method.diffaugment=rotate"], 2,
     "method.diffaugment takes a comma-separated list of color, translation, cutout; got 'rotate'"),
    (["--set", "method.name=diffusion"], 2, "method.name must be one of flow, edm, gan, vae; got 'diffusion'"),
    (["--method", "gan", "--set", "method.p_mean=3"], 2, "method gan has no setting p_mean (an edm setting)"),
    (["--set", "train.lr=nan"], 2, "train.lr must be a number; got 'nan'"),
    (["--lr", "nan"], 2, "--lr must be a finite number, got 'nan'"),
    (["--set", "model.channels=60000,60000", "--set", "model.attention=false,false"], 2,
     "parameters (at most 2,000,000,000); choose smaller model"),
    (["--dataset", "folder:/nonexistent/pics"], 1, "does not exist"),
])
def test_a_bad_setting_with_overwrite_leaves_the_old_run_as_it_was(old_run, capsys, argv, code, says):
    run, files = old_run
    base = ["train", "--dataset", "digits", "--images", "32", "--out", str(run), "--overwrite", "--no-progress"]
    assert main(base + argv) == code
    err = capsys.readouterr().err
    assert err.startswith("imagegen: error: ") and err.count("\n") == 1 and says in err, err
    assert untouched(run, files)


def test_networks_that_cannot_draw_the_data_are_refused_before_the_run_exists(image_folder, tmp_path, capsys):
    out = tmp_path / "gan"
    argv = ["train", "--method", "gan", "--dataset", f"folder:{image_folder}", "--size", "8", "--images", "32",
            "--out", str(out), "--no-progress", "--set", "model.width=5000000"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the gan networks of this config would have " in err and "choose smaller model settings" in err
    assert not out.exists()
    assert main(argv[:5] + ["--size", "6"] + argv[7:]) == 2  # a size the networks cannot halve is refused first
    assert "--size must be a multiple of 8 from 8 to 128 (each level of the networks halves it), got 6" in \
        capsys.readouterr().err and not out.exists()
    (tmp_path / "afile").write_text("mine")
    for where in (tmp_path / "afile", tmp_path / "afile" / "run"):
        assert main(["train", "--dataset", "digits", "--images", "32", "--out", str(where), "--overwrite"]) == 1
        assert "afile is a file, not a directory" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("argv", [["--lr", "0.1"], ["--set", "train.lr=0.1"], ["--config", "configs/flow.toml"],
                                  ["--method", "edm"], ["--batch-size", "8"], ["--dataset", "mnist"], ["--seed", "3"],
                                  ["--download"], ["--overwrite"]])
def test_resume_refuses_every_flag_but_the_budget_and_device(old_run, capsys, argv):
    run, files = old_run
    assert main(["train", "--resume", str(run), "--images", "64", *argv]) == 2
    err = capsys.readouterr().err
    assert err == (f"imagegen: error: {argv[0]} cannot be given with --resume: a resumed run keeps the settings it "
                   "began with (RUN_DIR/config.json) and may change only its budget (--minutes, --images), --device, "
                   "--no-progress and --json\n")
    assert untouched(run, files)
    with pytest.raises(UsageError, match="may change only minutes, images, device, not lr"):
        loop.train(None, run, resume=True, budget={"lr": 0.1}, show_progress=False)
    with pytest.raises(UsageError, match="train.minutes must be > 0; got 0"):
        loop.train(None, run, resume=True, budget={"minutes": 0}, show_progress=False)
    assert untouched(run, files)


def test_train_prints_a_summary_and_the_config_is_in_the_run(tmp_path, capsys):
    run = tmp_path / "new"
    argv = ["train", "--dataset", "digits", "--images", "32", "--batch-size", "32", "--out", str(run), "--no-progress"]
    assert main(argv + [a for s in TINY for a in ("--set", s)]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("flow on digits: ") and "parameters; budget 32 images, batch 32, device cpu" in first
    assert first.endswith(f"full config: {run / 'config.json'}") and len(first) - len(str(run)) < 160
    assert "{" not in out  # no config dump
    assert json.loads((run / "config.json").read_text())["model"]["channels"] == [8, 16]


def test_networks_that_fail_to_build_with_overwrite_leave_the_old_run_as_it_was(old_run, capsys, monkeypatch):
    from imagegen.train import recipes

    def no_memory(*args):  # the networks pass the checks on the meta device; memory for them is only met here
        raise MemoryError("cannot allocate the networks")

    monkeypatch.setattr(recipes, "build_optimizers", no_memory)
    run, files = old_run
    argv = ["train", "--dataset", "digits", "--images", "32", "--out", str(run), "--overwrite", "--no-progress"]
    assert main(argv) == 1
    assert "cannot allocate the networks" in capsys.readouterr().err
    assert untouched(run, files) and (run / "grids").is_dir()  # the old run is all there, its grids too
