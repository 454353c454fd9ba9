"""What differs between methods in training: which networks to build, and one `train_step` per method.
The loop in `runloop.py` is shared; the objectives live in `imagegen.methods`."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..artifacts import MAX_PARAMETERS  # one limit for the networks a config builds and those a file describes
from ..config import METHOD_CONFIGS, DCGANConfig, EDMConfig, GANConfig, GenConfig, UNetConfig, VAEConfig, to_dict
from ..errors import UsageError
from ..methods import augment, diffusion, gan, vae
from ..methods import noise as draws
from ..models import build_model
from . import dist

METHODS = tuple(METHOD_CONFIGS)  # flow, edm, gan, vae
# the network whose EMA becomes the inference artifact, and its kind in `imagegen.models`
INFERENCE = {"flow": ("net", "unet"), "edm": ("net", "unet"), "gan": ("generator", "dcgan-generator"),
             "vae": ("vae", "vae")}


def network_configs(cfg: GenConfig, shape: tuple[int, int, int], num_classes: int) -> dict[str, tuple[str, dict]]:
    """name -> (model kind, keyword arguments) for every network the method trains: the image shape and classes,
    and the settings of the model section (typed by the method: UNetConfig, DCGANConfig or VAEConfig)."""
    c, size, m = shape[0], shape[1], cfg.model
    data = {"image_size": size, "num_classes": num_classes}
    if isinstance(m, UNetConfig):
        m = fit_unet(m, shape)
        augment_dim = augment.AUGMENT_DIM if cfg.method.augment > 0 else 0
        return {"net": ("unet", {"in_channels": c, **data, **_lists(to_dict(m)), "augment_dim": augment_dim})}
    if isinstance(m, DCGANConfig):
        return {"generator": ("dcgan-generator", {"out_channels": c, **data, "z_dim": m.z_dim, "width": m.width,
                                                  "conditioning": m.gan_conditioning, "max_levels": m.max_levels}),
                "discriminator": ("dcgan-discriminator", {"in_channels": c, **data, "width": m.width,
                                                          "spectral_norm": m.spectral_norm,
                                                          "minibatch_std": m.minibatch_std,
                                                          "max_levels": m.max_levels})}
    if isinstance(m, VAEConfig):
        return {"vae": ("vae", {"in_channels": c, **data, **to_dict(m)})}
    raise ValueError(f"no networks for a model config of type {type(m).__name__}")


def unet_for(shape: tuple[int, int, int], patch: int | None = None) -> dict:
    """The UNet's patch, widths and attention for images of `shape` (the settings left to None): a patch of 1 up
    to 28 px, 2 up to 64 and 4 above (the levels' cost is in their pixels: on a 2-core CPU a 32 px colour UNet
    trains 3.6x faster patched); then one level per halving down to 4-7 pixels (3 at 28 px and 32 px, 4 at 64),
    widths doubling from 16 (greyscale) or 32 (colour) up to 4x that, and self-attention at the lowest level. At
    28x28 greyscale this is the measured Fashion-MNIST recipe, 16,32,64 with attention at 7x7; colour starts
    twice as wide, as three channels carry more to model than one. A `patch` given is kept, the levels fit it."""
    size = max(shape[1:])
    patch = patch or (1 if size <= 28 else 2 if size <= 64 else 4)
    levels = _levels(size // patch)
    return {"patch": patch, "channels": _widths(levels, shape[0]), "attention": _lowest(levels)}


def fit_unet(m: UNetConfig, shape: tuple[int, int, int]) -> UNetConfig:
    """`m` with the settings left to None chosen for images of `shape` (unet_for); attention flags given without
    widths keep the number of levels they name, widths without flags get attention at the lowest level."""
    auto = unet_for(shape, m.patch)
    levels = len(m.channels or m.attention or auto["channels"])
    return dataclasses.replace(m, patch=auto["patch"], channels=m.channels or _widths(levels, shape[0]),
                               attention=m.attention or _lowest(levels))


def describe(m: UNetConfig) -> str:
    """A UNet config's shape in a few words, for a run's log."""
    attn = [str(i + 1) for i, a in enumerate(m.attention or ()) if a]
    return (f"UNet widths {','.join(map(str, m.channels or ()))}, patch {m.patch}, self-attention at level "
            f"{','.join(attn) or 'none'}{' and the middle' if m.mid_attention else ''} (train.recipes.unet_for "
            "chooses what the config leaves out from the image size)")


def _levels(size: int) -> int:
    return max(2, 1 + int(math.log2(max(size, 1) / 4)))


def _widths(levels: int, in_channels: int) -> tuple[int, ...]:
    base = 16 if in_channels == 1 else 32
    return tuple(base * min(2**level, 4) for level in range(levels))


def _lowest(levels: int) -> tuple[bool, ...]:
    return (False,) * (levels - 1) + (True,)


def _lists(kwargs: dict) -> dict:
    """Tuples as lists, as the artifact's JSON holds them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def method_meta(cfg: GenConfig) -> dict:
    """What a sampler needs to know of the method besides its name, for the artifact's meta: EDM's sigma_data."""
    return {"sigma_data": cfg.method.sigma_data} if isinstance(cfg.method, EDMConfig) else {}


def build_networks(configs: dict[str, tuple[str, dict]]) -> dict[str, nn.Module]:
    return {name: build_model(kind, kwargs) for name, (kind, kwargs) in configs.items()}


def dry_run(cfg: GenConfig, shape: tuple[int, int, int], num_classes: int) -> int:
    """The number of parameters of the method's networks for images of `shape`, after building them and running
    one forward pass on PyTorch's meta device, which checks shapes without memory or arithmetic; a UsageError for
    networks that cannot be built for these images or are too big."""
    try:
        with torch.device("meta"):
            nets = build_networks(network_configs(cfg, shape, num_classes))
            n = sum(p.numel() for net in nets.values() for p in net.parameters())
            if n > MAX_PARAMETERS:
                raise UsageError(f"the {cfg.method.name} networks of this config would have {n:,} parameters "
                                 f"(at most {MAX_PARAMETERS:,}); choose smaller model settings")
            images = _meta_forward(cfg.method.name, nets, shape)
    except (ValueError, RuntimeError) as e:
        raise UsageError(f"the {cfg.method.name} networks of this config do not fit the data's {shape} images: "
                         f"{str(e).splitlines()[0]}") from None
    if tuple(images.shape[1:]) != tuple(shape):
        raise UsageError(f"the {cfg.method.name} networks of this config draw {tuple(images.shape[1:])} images, "
                         f"not the data's {shape}")
    return n


def _meta_forward(method: str, nets: dict[str, nn.Module], shape) -> torch.Tensor:
    """The images (or UNet output) of one forward pass of a batch of two, on the meta device."""
    x, y = torch.zeros(2, *shape), torch.zeros(2, dtype=torch.long)
    if method in ("flow", "edm"):
        return nets["net"](x, torch.ones(2), y)
    if method == "vae":
        return nets["vae"](x, y)[0]
    fake = nets["generator"](torch.zeros(2, nets["generator"].z_dim), y)
    nets["discriminator"](fake, y)
    return fake


def build_optimizers(cfg: GenConfig, nets: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
    """Adam for every network; the GAN uses DCGAN's beta1 = 0.5. Each parameter group carries an `lr_scale`, the
    multiple of the scheduled learning rate it trains at (the GAN's discriminator: `method.d_lr_scale`)."""
    gan = isinstance(cfg.method, GANConfig)
    betas = (0.5, 0.999) if gan else (0.9, 0.999)
    scale = {"discriminator": cfg.method.d_lr_scale} if gan else {}
    return {name: torch.optim.Adam([{"params": net.parameters(), "lr_scale": scale.get(name, 1.0)}],
                                   lr=cfg.train.lr * scale.get(name, 1.0), betas=betas)
            for name, net in nets.items()}


def train_step(cfg: GenConfig, nets: dict, opts: dict, x: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator, num_classes: int, *, share: dist.Share | None = None,
               replicas: dict | None = None) -> dict[str, float] | None:
    """One optimisation step of the configured method; None when a non-finite loss or gradient skipped it (on
    every process). x is the whole batch with noise from `generator`, or this process's `share` of the step's
    global batch, in its passes with their noise; the forward passes go through `replicas` (nets in DDP)."""
    m, clip, rep = cfg.method, cfg.train.grad_clip, replicas or nets
    # train.bf16 "auto" is resolved when the run starts (loop.GeneratorTask.configure); unresolved it means off
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16 is True)
    passes = share.passes() if share is not None else [(slice(None), generator)]
    total = share.total if share is not None else len(x)
    if m.name in ("flow", "edm"):
        kwargs = ({"sigma_data": m.sigma_data, "p_mean": m.p_mean, "p_std": m.p_std} if m.name == "edm"
                  else {"uniform": m.flow_uniform})

        def loss_sum(rows, rand):
            xs, ys, extra = x[rows], diffusion.drop_labels(y[rows], m.label_dropout, num_classes, rand), {}
            if m.augment > 0:
                xs, extra["augment_labels"] = augment.augment(xs, m.augment, rand)
                if cfg.train.channels_last:
                    xs = xs.contiguous(memory_format=torch.channels_last)
            with autocast:
                return diffusion.LOSSES[m.name](rep["net"], xs, ys, generator=rand, **kwargs, **extra).sum()

        loss = accumulate(loss_sum, passes, total, opts["net"], nets["net"], rep["net"], clip)
        return None if loss is None else {"loss": loss}
    if m.name == "vae":
        def vae_sum(rows, rand):
            with autocast:
                return vae.elbo_loss(rep["vae"], x[rows], y[rows], generator=rand, beta=m.beta).sum()

        loss = accumulate(vae_sum, passes, total, opts["vae"], nets["vae"], rep["vae"], clip)
        return None if loss is None else {"loss": loss}
    if len(passes) > 1:
        raise UsageError("the GAN takes its steps in one pass: train.micro_batch must be at least the batch of each "
                         "process (train.batch_size / processes)")
    return _gan_step(cfg, nets, rep, opts, x, y, passes[0][1], total, autocast)


def _gan_step(cfg, nets, rep, opts, x, y, rand, total, autocast) -> dict[str, float] | None:
    """Discriminator step on real and generated images, then generator step (DCGAN's alternation)."""
    m, clip = cfg.method, cfg.train.grad_clip
    G, D = rep["generator"], rep["discriminator"]
    everything = [(slice(None), rand)]

    def aug(images):
        return gan.diff_augment(images, m.diffaugment, rand) if m.diffaugment else images

    z = draws.randn(rand, (x.shape[0], nets["generator"].z_dim), x.device)
    with autocast:
        fake = G(z, y)

    def d_sum(rows, _):
        with autocast:
            loss = gan.d_loss(D(aug(x), y).float(), D(aug(fake.detach()), y).float(), m.gan_loss)
        if m.r1_gamma > 0:  # through the network itself: DDP does not differentiate twice
            loss = loss + m.r1_gamma / 2 * gan.r1_penalty(nets["discriminator"], x, y)
        return loss.sum()

    def g_sum(rows, _):
        with autocast:
            return gan.g_loss(D(aug(fake), y).float(), m.gan_loss).sum()

    loss_d = accumulate(d_sum, everything, total, opts["discriminator"], nets["discriminator"], D, clip)
    if loss_d is None:
        return None
    loss_g = accumulate(g_sum, everything, total, opts["generator"], nets["generator"], G, clip)
    if loss_g is None:
        return None
    return {"loss": loss_g, "loss_d": loss_d}


def accumulate(loss_sum, passes: list, total: int, opt: torch.optim.Optimizer, net: nn.Module, replica: nn.Module,
               clip: float) -> float | None:
    """One optimisation step over `passes` (rows, noise), `loss_sum(rows, noise)` the summed loss of each, for a
    global batch of `total` samples: the gradient of the global mean (DDP averages the processes' gradients after
    the last pass, as EDM scales by its batch per GPU); then the update, only if the loss and the gradient norm
    (clipped to `clip` when > 0) are finite. Both are the same on every process, so every process skips a step or
    none does. Returns the global mean loss, or None for a skipped step."""
    opt.zero_grad(set_to_none=True)
    sums = []
    for i, (rows, rand) in enumerate(passes):
        with dist.no_sync(replica, last=i == len(passes) - 1):
            s = loss_sum(rows, rand)
            (s * (dist.world_size() / total)).backward()
        sums.append(s.detach().float())
    loss = dist.all_sum(torch.stack(sums).sum()) / total
    norm = nn.utils.clip_grad_norm_(net.parameters(), clip if clip > 0 else math.inf) if math.isfinite(loss) else loss
    if not math.isfinite(loss) or not torch.isfinite(torch.as_tensor(norm)):
        opt.zero_grad(set_to_none=True)
        return None
    opt.step()
    return loss


def update(loss: torch.Tensor, opt: torch.optim.Optimizer, net: nn.Module, clip: float) -> bool:
    """Backward of one process's mean loss, then step only if the loss and the gradient norm are finite."""
    return accumulate(lambda rows, rand: loss, [(None, None)], 1, opt, net, net, clip) is not None


# The quick recipe: `imagegen demo`'s for budgets under 5 minutes (configs/quick.toml holds the same settings, a
# test keeps the two equal). Measured on a 2-core CPU with bf16 units, 2.5 minutes of training, n = 2,000, the
# pinned fashion-mnist-v1 evaluator (floor FID 1.05), bench/RESULTS.md "Issue 23": the default recipe cut short
# drew FID 30-45; patched at half the resolution (2x2 pixels into channels, 14x14 and 7x7 levels), without
# attention (500 img/s against 380 with it), batch 64 (more steps: FID 10.6 against 15.8 at batch 128 for the same
# 80,000 images), an EMA half-life of 2,000 images and only logit-normal times: FID 5.9-6.4, 75,000 images.
QUICK = {"model.channels": "32,64", "model.patch": 2, "model.attention": "false,false", "model.mid_attention": False,
         "method.flow_uniform": 0.0, "train.batch_size": 64, "train.lr": 3e-3, "train.ema_half_life_images": 2000,
         "sample.steps": 6, "sample.guidance": 2.5, "sample.autoguidance": 1.0}  # measured without autoguidance
QUICK_MINUTES = 5.0  # budgets below this train the quick recipe in `imagegen demo`; longer ones the default
