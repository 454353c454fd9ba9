"""The typed config: choices, ranges and settings a method does not read are refused when a config is built."""

import dataclasses
import typing
from pathlib import Path

import pytest
import torch

from imagegen.config import READ_BY, ClassifyConfig, DistillConfig, GenConfig, checked, load, to_dict
from imagegen.errors import UsageError
from imagegen.methods.classification import LOSSES
from imagegen.methods.gan import GAN_LOSSES, diff_augment
from imagegen.methods.samplers import SAMPLERS
from imagegen.models.gan import CONDITIONING
from imagegen.models.layers import ACTIVATIONS, POOLINGS
from imagegen.train.optim import OPTIMIZERS, make_optimizer
from imagegen.train.recipes import METHODS

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("override, message", [
    ("method.gan_loss=wgan", "config key method.gan_loss must be one of non-saturating, hinge; got 'wgan'"),
    ("train.schedule=linear", "config key train.schedule must be one of cosine, constant; got 'linear'"),
    ("method.name=diffusion", "config key method.name must be one of flow, edm, gan, vae; got 'diffusion'"),
    ("sample.sampler=rk45", "config key sample.sampler must be one of euler, heun, dpmpp-2m, ddim; got 'rk45'"),
    ("model.gan_conditioning=concat", "config key model.gan_conditioning must be one of norm, add; got 'concat'"),
    ("train.bf16=sometimes", "config key train.bf16 must be one of true, false, auto; got 'sometimes'"),
    ("device=tpu", "config key device must be one of auto, cpu, cuda; got 'tpu'"),
    ("data.channels=2", "config key data.channels must be one of 1, 3; got '2'"),
    ("train.lr=nan", "config key train.lr must be a number; got 'nan'"),
    ("train.lr=inf", "config key train.lr must be a finite number; got 'inf'"),
    ("sample.guidance=-inf", "config key sample.guidance must be a finite number; got '-inf'"),
    ("train.lr=0", "config key train.lr must be > 0; got 0.0"),
    ("train.batch_size=0", "config key train.batch_size must be >= 1; got 0"),
    ("train.minutes=-1", "config key train.minutes must be > 0; got -1.0"),
    ("train.ema_half_life_images=-5", "config key train.ema_half_life_images must be >= 0; got -5"),
    ("model.dropout=1", r"config key model.dropout must be in \[0, 1\); got 1.0"),
    ("method.label_dropout=-0.1", r"config key method.label_dropout must be in \[0, 1\); got -0.1"),
    ("model.channels=16,0", r"config key model.channels\[1\] must be >= 1; got 0"),
    ("sample.guidance_interval=0.3,nan", r"config key sample.guidance_interval\[1\] must be a number; got 'nan'"),
    ("model.attention=maybe,no", r"config key model.attention\[0\] must be true or false; got 'maybe'"),
    ("seed=-1", "config key seed must be >= 0; got -1"),
])
def test_bad_values_are_refused_when_the_config_is_built(override, message):
    with pytest.raises(UsageError, match=f"^{message}$"):
        load(GenConfig, overrides=[override])


def test_diffaugment_is_a_comma_list_of_known_policies():
    gan = {"method.name": "gan"}
    assert load(GenConfig, overrides=["method.diffaugment=translation,cutout"], flags=gan).method.diffaugment \
        == "translation,cutout"
    assert load(GenConfig, overrides=["method.diffaugment="], flags=gan).method.diffaugment == ""
    with pytest.raises(UsageError, match="method.diffaugment takes a comma-separated list of color, translation, "
                                         "cutout; got 'rotate'"):
        load(GenConfig, overrides=["method.diffaugment=color,rotate"], flags=gan)
    x = torch.zeros(2, 1, 8, 8)  # the names the config allows are the names the GAN applies
    assert diff_augment(x, "color,translation,cutout", torch.Generator()).shape == x.shape


def test_values_that_mean_something_are_accepted():
    cfg = load(GenConfig, overrides=["train.bf16=true", "data.channels=3", "sample.guidance_interval=0,inf",
                                     "train.minutes=none", "train.images=64", "method.flow_uniform=1"])
    assert cfg.train.bf16 is True and cfg.data.channels == 3 and cfg.sample.guidance_interval == (0.0, float("inf"))
    assert cfg.train.minutes is None and cfg.method.flow_uniform == 1.0
    assert load(GenConfig, overrides=["train.bf16=auto"]).train.bf16 == "auto"


def test_a_config_changed_in_code_is_checked_again():
    cfg = GenConfig()
    assert checked(cfg) == cfg
    cfg.train.lr = float("nan")
    with pytest.raises(UsageError, match="train.lr must be a number"):
        checked(cfg)


def literal(cls, name):
    return typing.get_args(typing.get_type_hints(cls)[name])


def test_the_config_choices_are_the_implementations_choices():
    from imagegen.config import FitConfig, GenModelConfig, MethodConfig, SampleConfig, SeedModelConfig

    assert literal(SeedModelConfig, "activation") == tuple(ACTIVATIONS)
    assert literal(SeedModelConfig, "pooling") == tuple(POOLINGS)
    assert literal(FitConfig, "optimizer") == OPTIMIZERS and literal(FitConfig, "loss") == tuple(LOSSES)
    assert literal(MethodConfig, "name") == METHODS and literal(MethodConfig, "gan_loss") == GAN_LOSSES
    assert literal(GenModelConfig, "gan_conditioning") == CONDITIONING
    assert literal(SampleConfig, "sampler") == tuple(SAMPLERS)


def test_adamw_honours_a_weight_decay_of_zero():
    params = [torch.zeros(1, requires_grad=True)]
    assert make_optimizer("adamw", params, 1e-3, 0.0).param_groups[0]["weight_decay"] == 0.0
    assert make_optimizer("adamw", params, 1e-3, 5e-4).param_groups[0]["weight_decay"] == 5e-4


def default(key):
    section, name = key.split(".")
    return getattr(getattr(GenConfig(), section), name)


@pytest.mark.parametrize("key, readers", sorted(READ_BY.items()))
def test_a_setting_is_accepted_only_for_the_methods_that_read_it(key, readers):
    section, name = key.split(".")
    assert name in {f.name for f in dataclasses.fields(getattr(GenConfig(), section))}  # no typo in the table
    for method in METHODS:
        flags = {"method.name": method, key: default(key)}
        if method in readers:
            assert load(GenConfig, flags=flags).method.name == method
        else:
            with pytest.raises(UsageError, match=f"^{key} is an? .*setting; the {method} method does not read it$"):
                load(GenConfig, flags=flags)


def test_the_unread_setting_message_names_its_method():
    with pytest.raises(UsageError, match="^method.p_mean is an edm setting; the gan method does not read it$"):
        load(GenConfig, overrides=["method.p_mean=3"], flags={"method.name": "gan"})
    with pytest.raises(UsageError, match="^model.z_dim is a gan and vae setting; the flow method does not read it$"):
        load(GenConfig, overrides=["model.z_dim=3"])


def test_every_recipe_loads_with_its_method_and_no_other(tmp_path):
    assert load(GenConfig, CONFIGS / "flow.toml") == GenConfig()  # "every value here is also the default"
    gan = load(GenConfig, CONFIGS / "gan.toml")
    assert gan.method.name == "gan" and gan.method.d_lr_scale == 4 and gan.method.diffaugment == "translation,cutout"
    assert load(ClassifyConfig, CONFIGS / "seed.toml") == ClassifyConfig()
    with pytest.raises(UsageError, match="^method.flow_uniform is a flow setting; the gan method does not read it$"):
        load(GenConfig, CONFIGS / "flow.toml", flags={"method.name": "gan"})
    (tmp_path / "bad.toml").write_text('[method]\nname = "vae"\nbeta = 0.5\nr1_gamma = 1\n')
    with pytest.raises(UsageError, match="^method.r1_gamma is a gan setting; the vae method does not read it$"):
        load(GenConfig, tmp_path / "bad.toml")


def test_distill_and_classify_configs_are_typed_too():
    with pytest.raises(UsageError, match="^config key teacher_sampler must be one of euler, heun, dpmpp-2m, ddim"):
        load(DistillConfig, overrides=["teacher_sampler=rk4"])
    with pytest.raises(UsageError, match="^config key method must be one of progressive, reflow; got 'x'$"):
        load(DistillConfig, overrides=["method=x"])
    assert load(DistillConfig, flags={"guidance_interval": (0.0, float("inf"))}).guidance_interval[1] == float("inf")
    with pytest.raises(UsageError, match="^config key fit.optimizer must be one of sgd, adam, adamw; got 'rmsprop'$"):
        load(ClassifyConfig, overrides=["fit.optimizer=rmsprop"])
    with pytest.raises(UsageError, match=r"^config key fit.label_smoothing must be in \[0, 1\); got 1.0$"):
        load(ClassifyConfig, overrides=["fit.label_smoothing=1"])
    assert to_dict(load(ClassifyConfig, overrides=["fit.weight_decay=0"]))["fit"]["weight_decay"] == 0.0
