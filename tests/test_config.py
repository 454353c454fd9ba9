"""The typed config: choices, ranges and settings a method does not read are refused when a config is built."""

import copy
import dataclasses
import inspect
import json
import re
import typing
from pathlib import Path

import pytest
import torch

from imagegen.cli import main
from imagegen.config import (
    EVALUATOR_WIDTH,
    METHOD_CONFIGS,
    MODEL_CONFIGS,
    READ_BY,
    UNET,
    ClassifyConfig,
    DCGANConfig,
    DistillConfig,
    EDMConfig,
    GANConfig,
    GenConfig,
    Method,
    SeedModelConfig,
    UNetConfig,
    VAEConfig,
    VAELossConfig,
    checked,
    load,
    saved_config,
    to_dict,
)
from imagegen.errors import UsageError
from imagegen.methods.classification import LOSSES
from imagegen.methods.gan import GAN_LOSSES, diff_augment
from imagegen.methods.samplers import SAMPLERS
from imagegen.models import VAE, Discriminator, EvaluatorNet, Generator, SeedClassifier, UNet, build_model
from imagegen.models.gan import CONDITIONING
from imagegen.models.layers import ACTIVATIONS, POOLINGS
from imagegen.train.optim import OPTIMIZERS, make_optimizer
from imagegen.train.recipes import METHODS, QUICK, fit_unet, network_configs

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("override, message", [
    ("train.schedule=linear", "config key train.schedule must be one of cosine, constant; got 'linear'"),
    ("method.name=diffusion", "config key method.name must be one of flow, edm, gan, vae; got 'diffusion'"),
    ("sample.sampler=rk45", "config key sample.sampler must be one of euler, heun, dpmpp-2m, ddim; got 'rk45'"),
    ("train.bf16=sometimes", "config key train.bf16 must be one of true, false, auto; got 'sometimes'"),
    ("device=tpu", "config key device must be one of auto, cpu, cuda; got 'tpu'"),
    ("data.channels=2", "config key data.channels must be one of 1, 3; got '2'"),
    ("train.lr=nan", "config key train.lr must be a number; got 'nan'"),
    ("train.lr=inf", "config key train.lr must be a finite number; got 'inf'"),
    ("sample.guidance=-inf", "config key sample.guidance must be a finite number; got '-inf'"),
    ("train.lr=0", r"config key train.lr must be in \(0, 10\]; got 0.0"),
    ("train.batch_size=0", r"config key train.batch_size must be in \[1, 16384\]; got 0"),
    ("train.minutes=-1", "config key train.minutes must be > 0; got -1.0"),
    ("train.ema_half_life_images=-5", "config key train.ema_half_life_images must be >= 0; got -5"),
    ("model.dropout=1", r"config key model.dropout must be in \[0, 1\); got 1.0"),
    ("method.label_dropout=-0.1", r"config key method.label_dropout must be in \[0, 1\); got -0.1"),
    ("model.channels=16,0", r"config key model.channels\[1\] must be >= 1; got 0"),
    ("sample.guidance_interval=0.3,nan", r"config key sample.guidance_interval\[1\] must be a number; got 'nan'"),
    ("model.attention=maybe,no", r"config key model.attention\[0\] must be true or false; got 'maybe'"),
    ("seed=-1", r"config key seed must be in \[0, 9,223,372,036,854,775,807\]; got -1"),
])
def test_bad_values_are_refused_when_the_config_is_built(override, message):
    with pytest.raises(UsageError, match=f"^{message}$"):
        load(GenConfig, overrides=[override])


@pytest.mark.parametrize("override, message", [
    ("method.gan_loss=wgan", "config key method.gan_loss must be one of non-saturating, hinge; got 'wgan'"),
    ("model.gan_conditioning=concat", "config key model.gan_conditioning must be one of norm, add; got 'concat'"),
    ("model.minibatch_std=-1", "config key model.minibatch_std must be >= 0; got -1"),
])
def test_a_gan_setting_is_checked_like_any_other(override, message):
    with pytest.raises(UsageError, match=f"^{message}$"):
        load(GenConfig, overrides=[override], flags={"method.name": "gan"})


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
    from imagegen.config import FitConfig, SampleConfig

    assert literal(SeedModelConfig, "activation") == tuple(ACTIVATIONS)
    assert literal(SeedModelConfig, "pooling") == tuple(POOLINGS)
    assert literal(FitConfig, "optimizer") == OPTIMIZERS and literal(FitConfig, "loss") == tuple(LOSSES)
    assert typing.get_args(Method) == METHODS == tuple(METHOD_CONFIGS) == tuple(MODEL_CONFIGS)
    assert all(literal(cls, "name") == (name,) for name, cls in METHOD_CONFIGS.items())  # each section's tag
    assert literal(GANConfig, "gan_loss") == GAN_LOSSES
    assert literal(DCGANConfig, "gan_conditioning") == CONDITIONING
    assert literal(SampleConfig, "sampler") == tuple(SAMPLERS)


def test_adamw_honours_a_weight_decay_of_zero():
    params = [torch.zeros(1, requires_grad=True)]
    assert make_optimizer("adamw", params, 1e-3, 0.0).param_groups[0]["weight_decay"] == 0.0
    assert make_optimizer("adamw", params, 1e-3, 5e-4).param_groups[0]["weight_decay"] == 5e-4


def default(key):
    section, name = key.split(".")
    return getattr(getattr(GenConfig(), section), name)


@pytest.mark.parametrize("key, readers", sorted(READ_BY.items()))
def test_a_sample_setting_is_accepted_only_for_the_methods_that_read_it(key, readers):
    section, name = key.split(".")
    assert name in {f.name for f in dataclasses.fields(getattr(GenConfig(), section))}  # no typo in the table
    for method in METHODS:
        flags = {"method.name": method, key: default(key)}
        if method in readers:
            assert load(GenConfig, flags=flags).method.name == method
        else:
            with pytest.raises(UsageError, match=f"^{key} is an? .*setting; the {method} method does not read it$"):
                load(GenConfig, flags=flags)


def names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


SECTIONS = {"method": METHOD_CONFIGS, "model": MODEL_CONFIGS}
# every (method, section, setting) of a method and model section of any method
EVERY_SETTING = sorted({(m, section, key) for m in METHODS for section, family in SECTIONS.items()
                        for cls in family.values() for key in names(cls)})


UNSET_EXAMPLES = {"channels": (16, 32), "attention": (False, True), "patch": 2}


@pytest.mark.parametrize("method, section, key", EVERY_SETTING)
def test_each_method_takes_its_own_settings_and_refuses_the_others_in_one_line(method, section, key):
    cls = SECTIONS[section][method]
    value = getattr(cls(), key, None)  # the setting's default where this method has it
    if key in names(cls):
        cfg = load(GenConfig, flags={"method.name": method, f"{section}.{key}": value})
        assert type(getattr(cfg, section)) is cls and getattr(getattr(cfg, section), key) == value
        return
    others = [m for m, c in SECTIONS[section].items() if key in names(c)]
    holder = f"method {method}" if section == "method" else f"the {method} method's model, an? [A-Za-z]+,"
    given = getattr(SECTIONS[section][others[0]](), key)
    given = UNSET_EXAMPLES.get(key, given) if given is None else given  # None (chosen from the data) is not given
    with pytest.raises(UsageError) as e:
        load(GenConfig, flags={"method.name": method, f"{section}.{key}": given})
    message = str(e.value)
    assert "\n" not in message
    assert re.match(f"^{holder} has no setting {key} \\(.*\\); its settings are: {', '.join(names(cls))}$", message)
    assert all(m in message.split("(")[1] for m in others)  # where the setting belongs


def test_the_unread_setting_message_names_the_method_its_settings_and_where_the_setting_belongs():
    with pytest.raises(UsageError, match="^method gan has no setting p_mean \\(an edm setting\\); its settings are: "
                                         "name, gan_loss, r1_gamma, diffaugment, d_lr_scale$"):
        load(GenConfig, overrides=["method.p_mean=3"], flags={"method.name": "gan"})
    with pytest.raises(UsageError, match="^the flow method's model, a UNet, has no setting z_dim \\(a DCGAN setting, "
                                         "for gan; a VAE setting, for vae\\); its settings are: channels, blocks, "
                                         "attention, mid_attention, dropout, noise_scale, patch$"):
        load(GenConfig, overrides=["model.z_dim=3"])
    with pytest.raises(UsageError, match="^method vae has no setting gan_los; its settings are: name, beta$"):
        load(GenConfig, overrides=["method.gan_los=hinge"], flags={"method.name": "vae"})  # a typo, nobody's


def test_the_command_line_refuses_another_methods_setting_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "gan", "--set", "method.p_mean=3", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == ("imagegen: error: method gan has no setting p_mean (an edm setting); its settings are: name, "
                   "gan_loss, r1_gamma, diffaugment, d_lr_scale\n")
    assert not out.exists()


def test_a_config_built_in_code_has_the_model_of_its_method():
    assert type(GenConfig().model) is UNetConfig and type(GenConfig().method).__name__ == "FlowConfig"
    assert GenConfig(method=GANConfig()).model == DCGANConfig()
    assert GenConfig(method=VAELossConfig(), model=VAEConfig(z_dim=8)).model.z_dim == 8
    with pytest.raises(UsageError, match="^the edm method trains a UNet: its model config is a UNetConfig, not a "
                                         "DCGANConfig$"):
        GenConfig(method=EDMConfig(), model=DCGANConfig())
    cfg = GenConfig()
    cfg.method = GANConfig()  # changed in code after it was built: checked again before a run
    with pytest.raises(UsageError, match="^the gan method's model, a DCGAN, has no setting channels"):
        checked(cfg)


# `to_dict(GenConfig())` at 007ca4e, before the sections were typed: every method's settings in one flat section
FLAT_DEFAULTS = {
    "data": {"dataset": "fashion-mnist", "data_dir": None, "download": False, "size": 32, "channels": None,
             "strict": False},
    "model": {"channels": [16, 32, 64], "blocks": 1, "attention": [False, False, True], "mid_attention": True,
              "dropout": 0.0, "noise_scale": 1000.0, "patch": 1, "z_dim": 64, "width": 64, "spectral_norm": False,
              "minibatch_std": 0, "gan_conditioning": "norm"},
    "method": {"name": "flow", "label_dropout": 0.1, "flow_uniform": 0.5, "sigma_data": 0.5, "p_mean": -1.2,
               "p_std": 1.2, "gan_loss": "non-saturating", "r1_gamma": 0.0, "diffaugment": "", "d_lr_scale": 1.0,
               "beta": 1.0},
    "train": {"minutes": 5.0, "images": None, "batch_size": 128, "lr": 0.002, "warmup_images": 5000,
              "schedule": "cosine", "grad_clip": 1.0, "ema_half_life_images": 5000, "bf16": "auto",
              "channels_last": True, "flip": False, "checkpoint_minutes": 5.0, "checkpoint_images": None,
              "grid_minutes": 2.0, "log_every": 50, "max_bad_steps": 5, "eval_samples": 2000},
    "sample": {"sampler": "dpmpp-2m", "steps": 8, "guidance": 1.4, "guidance_interval": [0.3, 3.0],
               "batch_size": 250, "eta": 0.0},  # eta is new since 007ca4e (ddim's; 0 = what ddim did then)
    "seed": 0, "device": "auto",
}
# what `network_configs` built at 007ca4e for each method's defaults, for 28x28 grey images of 10 classes
FLAT_NETWORKS = {
    "unet": {"in_channels": 1, "image_size": 28, "num_classes": 10, "channels": [16, 32, 64], "blocks": 1,
             "attention": [False, False, True], "dropout": 0.0, "noise_scale": 1000.0, "patch": 1,
             "mid_attention": True},
    "dcgan-generator": {"out_channels": 1, "image_size": 28, "num_classes": 10, "z_dim": 64, "width": 64,
                        "conditioning": "norm"},
    "dcgan-discriminator": {"in_channels": 1, "image_size": 28, "num_classes": 10, "width": 64,
                            "spectral_norm": False, "minibatch_std": 0},
    "vae": {"in_channels": 1, "image_size": 28, "num_classes": 10, "z_dim": 64, "width": 64},
}


@pytest.mark.parametrize("method", METHODS)
def test_the_defaults_are_the_flat_configs_defaults(method):
    cfg = load(GenConfig, flags={"method.name": method})
    resolved = dataclasses.replace(cfg, model=fit_unet(cfg.model, (1, 28, 28))) if method in UNET else cfg
    new = json.loads(json.dumps(to_dict(resolved)))  # the UNet's settings left to the data, chosen for 28x28 grey
    for section in ("model", "method"):  # the method's own settings, each with the value it had
        old = {**FLAT_DEFAULTS[section], **NEW_SINCE[section], "name": method}
        assert new[section] == {k: old[k] for k in new[section]}
    then = {k: v for k, v in FLAT_DEFAULTS.items() if k not in ("model", "method")}
    then["data"] = {**then["data"], "subset": 1.0}  # since 2026-12-03: the whole training split, as before
    then["train"] = {**then["train"], "grid_images": None,  # since issue 26: grids by time, as before
                     "micro_batch": None,  # since issue 27: the whole batch in one pass, as before
                     "guide_fraction": 0.2,  # since issue 26: a guide for autoguidance, at 20% of the budget
                     "class_balance": 0.0}  # since issue 24: the data's own mix of classes, as before
    then["sample"] = {**then["sample"], "autoguidance": 2.0, "guidance": 1.3,  # ... sampled with it, less CFG,
                      "autoguidance_interval": [0.0, 10.0]}  # ... and not at the pure-noise levels
    assert {k: v for k, v in new.items() if k not in ("model", "method")} == then
    for kind, kwargs in network_configs(cfg, (1, 28, 28), 10).values():  # and the networks are built as before
        assert kwargs == {**FLAT_NETWORKS[kind], **NEW_KEYWORDS[kind]}


# settings added since 007ca4e, whose defaults build what was built before: no augmentation, the same levels at 28 px
NEW_SINCE = {"model": {"max_levels": 4}, "method": {"augment": 0.0}}
NEW_KEYWORDS = {"unet": {"augment_dim": 0}, "dcgan-generator": {"max_levels": 4},
                "dcgan-discriminator": {"max_levels": 4}, "vae": {"max_levels": 4}}


# config.json of `imagegen train --config configs/gan.toml --images 256 --set train.eval_samples=0` at 007ca4e
# (written with sorted keys), with the widths changed and two settings the GAN did not read set as a user might have
OLD_GAN_RUN = {
    "data": {"channels": None, "data_dir": None, "dataset": "fashion-mnist", "download": False, "size": 32,
             "strict": False},
    "device": "auto",
    "method": {"beta": 1.0, "d_lr_scale": 4.0, "diffaugment": "translation,cutout", "flow_uniform": 0.5,
               "gan_loss": "non-saturating", "label_dropout": 0.1, "name": "gan", "p_mean": -1.2, "p_std": 1.2,
               "r1_gamma": 0.0, "sigma_data": 0.7},
    "model": {"attention": [False, False, True], "blocks": 1, "channels": [8, 16, 32], "dropout": 0.0,
              "gan_conditioning": "norm", "mid_attention": True, "minibatch_std": 0, "noise_scale": 1000.0,
              "patch": 1, "spectral_norm": False, "width": 8, "z_dim": 16},
    "sample": {"batch_size": 250, "guidance": 1.4, "guidance_interval": [0.3, 3.0], "sampler": "dpmpp-2m",
               "steps": 8},
    "seed": 0,
    "train": {"batch_size": 64, "bf16": True, "channels_last": True, "checkpoint_images": None,
              "checkpoint_minutes": 5.0, "ema_half_life_images": 5000, "eval_samples": 0, "flip": False,
              "grad_clip": 1.0, "grid_minutes": 2.0, "images": 256, "log_every": 50, "lr": 0.0002,
              "max_bad_steps": 5, "minutes": 5.0, "schedule": "constant", "warmup_images": 5000},
}


def test_a_runs_flat_config_loads_as_its_methods_sections():
    cfg = saved_config(OLD_GAN_RUN)
    assert cfg.method == GANConfig(d_lr_scale=4.0, diffaugment="translation,cutout")  # sigma_data 0.7 did nothing
    assert cfg.model == DCGANConfig(z_dim=16, width=8, max_levels=3)  # and channels neither; 3 levels then
    assert cfg.train.lr == 0.0002 and cfg.train.bf16 is True and cfg.sample.batch_size == 250
    assert saved_config(to_dict(cfg)) == cfg == checked(cfg)  # the new shape saves and loads as itself
    flow = saved_config(FLAT_DEFAULTS)
    grey28 = fit_unet(UNetConfig(), (1, 28, 28))  # the widths a run saved then has, and a new one chooses at 28 px
    # a run saved before autoguidance keeps sampling without it (and CFG at the 1.4 it saved)
    before = GenConfig(model=grey28, train=dataclasses.replace(GenConfig().train, guide_fraction=0.0),
                       sample=dataclasses.replace(GenConfig().sample, autoguidance=1.0, guidance=1.4,
                                                  autoguidance_interval=None))
    assert flow == before and to_dict(flow)["model"] == to_dict(grey28)
    for name in METHODS:  # every method's saved flat config: its own settings, as they were
        old = copy.deepcopy(FLAT_DEFAULTS)
        old["method"]["name"] = name
        new = load(GenConfig, flags={"method.name": name})
        new.model = grey28 if name in UNET else dataclasses.replace(new.model, max_levels=3)
        new.train, new.sample = before.train, before.sample
        assert saved_config(old) == new


def test_a_runs_config_saved_before_a_setting_existed_keeps_the_design_it_was_trained_with():
    old = copy.deepcopy(OLD_GAN_RUN)  # a GAN run from before 2026-11-26: no conditioning, no d_lr_scale
    del old["model"]["gan_conditioning"], old["method"]["d_lr_scale"], old["model"]["mid_attention"]
    cfg = saved_config(old)
    assert cfg.model.gan_conditioning == "add" and cfg.method.d_lr_scale == 1.0
    assert load(GenConfig, flags={"method.name": "gan"}).model.gan_conditioning == "norm"  # a new run's default
    autoguided = to_dict(load(GenConfig))  # a run saved with autoguidance 2 before its interval existed
    del autoguided["sample"]["autoguidance_interval"]
    then = saved_config(autoguided).sample
    assert then.autoguidance == 2.0 and then.autoguidance_interval is None  # every level, as it sampled then
    assert load(GenConfig).sample.autoguidance_interval == (0.0, 10.0)  # a new run's default


def test_a_saved_config_is_checked_all_the_same():
    for section, key, value, says in [("model", "width", 0, "config key model.width must be >= 1; got 0"),
                                      ("method", "name", "gann", "config key method.name must be one of flow"),
                                      ("model", "depth", 3, "the gan method's model, a DCGAN, has no setting depth"),
                                      ("method", "gan_loss", "wgan", "config key method.gan_loss must be one of")]:
        bad = copy.deepcopy(OLD_GAN_RUN)
        bad[section][key] = value
        with pytest.raises(UsageError, match=f"^{says}"):
            saved_config(bad)


# each network's constructor and the config section whose values are its keyword defaults: {keyword: setting}
CONSTRUCTORS = [
    (UNet, UNetConfig, {f: f for f in names(UNetConfig)}),
    (Generator, DCGANConfig, {"z_dim": "z_dim", "width": "width", "conditioning": "gan_conditioning",
                              "max_levels": "max_levels"}),
    (Discriminator, DCGANConfig, {"width": "width", "spectral_norm": "spectral_norm",
                                  "minibatch_std": "minibatch_std", "max_levels": "max_levels"}),
    (VAE, VAEConfig, {"z_dim": "z_dim", "width": "width", "max_levels": "max_levels"}),
    (SeedClassifier, SeedModelConfig, {f: f for f in names(SeedModelConfig)}),
]


@pytest.mark.parametrize("net, section, keywords", CONSTRUCTORS, ids=lambda x: getattr(x, "__name__", ""))
def test_model_constructors_take_their_defaults_from_the_config(net, section, keywords):
    params = inspect.signature(net).parameters
    # settings left to the data (None) default to their choice at the constructor's default image, 28x28 grey
    config = fit_unet(section(), (1, 28, 28)) if section is UNetConfig else section()
    assert {k: params[k].default for k in keywords} == {k: getattr(config, s) for k, s in keywords.items()}
    data = {"in_channels", "out_channels", "image_size", "num_classes"}  # from the data set, not the config
    data |= {"augment_dim"} if net is UNet else set()  # from the method's augmentation (methods.augment)
    assert set(params) - data == set(keywords)  # every other default is the config's


def test_the_evaluator_network_defaults_to_the_evaluators_width():
    assert inspect.signature(EvaluatorNet).parameters["width"].default == EVALUATOR_WIDTH


def test_every_network_setting_reaches_the_network():
    """Each setting of a model section is a keyword of a network the method builds (none is dropped on the way)."""
    for method in METHODS:
        cfg = load(GenConfig, flags={"method.name": method})
        kwargs = [kw for _, kw in network_configs(cfg, (1, 28, 28), 10).values()]
        reached = {k for kw in kwargs for k in kw} | ({"gan_conditioning"} if method == "gan" else set())
        assert set(names(type(cfg.model))) <= reached, method


def test_an_artifact_written_before_a_keyword_existed_rebuilds_the_network_it_was_trained_as():
    kw = {"out_channels": 1, "image_size": 28, "num_classes": 10, "z_dim": 8, "width": 8}
    old = build_model("dcgan-generator", kw)  # before 2026-11-26 an artifact had no "conditioning": "add"
    assert old.class_emb is not None and set(old.state_dict()) == set(Generator(**kw, conditioning="add").state_dict())
    assert Generator(**kw).class_emb is None  # a new network's default is the config's, "norm"
    unet = build_model("unet", {"channels": [8, 16], "attention": [False, True]})
    assert unet.patch == 1 and unet.noise_emb[0].scale == 1000.0


def test_every_recipe_loads_with_its_method_and_no_other(tmp_path):
    assert load(GenConfig, CONFIGS / "flow.toml") == GenConfig()  # "every value here is also the default"
    gan = load(GenConfig, CONFIGS / "gan.toml")
    assert gan.method.name == "gan" and gan.method.d_lr_scale == 4 and gan.method.diffaugment == "translation,cutout"
    assert load(ClassifyConfig, CONFIGS / "seed.toml") == ClassifyConfig()
    quick = load(GenConfig, CONFIGS / "quick.toml")  # the demo's built-in quick recipe, as users read it
    assert quick == load(GenConfig, flags=QUICK) != GenConfig()
    assert quick.model.patch == 2 and quick.train.batch_size == 64 and quick.sample.steps == 6
    assert type(gan.model) is DCGANConfig and gan.model.gan_conditioning == "norm"
    with pytest.raises(UsageError, match="^method gan has no setting label_dropout \\(a flow and edm setting\\)"):
        load(GenConfig, CONFIGS / "flow.toml", flags={"method.name": "gan"})
    (tmp_path / "bad.toml").write_text('[method]\nname = "vae"\nbeta = 0.5\nr1_gamma = 1\n')
    with pytest.raises(UsageError, match="^method vae has no setting r1_gamma \\(a gan setting\\); its settings are: "
                                         "name, beta$"):
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
