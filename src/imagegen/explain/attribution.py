"""Attributions for classifiers (the seed classifier, the evaluator, any nn.Module that maps images to logits):
saliency, integrated gradients and Grad-CAM, computed by captum (the `explain` extra).

Every attribution has one contract: `attribute(name, model, x, target) -> map` with the input's spatial shape
(saliency and integrated gradients: exactly x's shape; Grad-CAM: one channel, upsampled to x's height and width).
captum wants a function with one scalar per example; `ScalarOutput` is the one wrapper that makes it, for
classifiers (the target class's logit) and for anything else with a `reduce` function (a generator's image
output reduced to, say, the evaluator's logit of the class it was asked for).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ImagegenError, UsageError


def _captum():
    try:
        import captum.attr
    except ImportError:
        raise ImagegenError("explanations need captum: pip install 'imagegen[explain]'") from None
    return captum.attr


def target_logit(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, K) logits, (B,) class indices -> (B,) the logit of each example's target class."""
    return output.gather(1, target[:, None].long()).squeeze(1)


class ScalarOutput(nn.Module):
    """model(x) reduced to one number per example: reduce(model(x), target) -> (B,). The target travels as a
    forward argument, so captum expands it with the inputs (integrated gradients batches many copies of x)."""

    def __init__(self, model: nn.Module, reduce: Callable = target_logit):
        super().__init__()
        self.model, self.reduce = model, reduce

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.model(x), target)


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every convolution of a model by its dotted name, in forward order of definition."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def find_layer(model: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """The named layer, or the last convolution when `name` is None; an unknown name lists the valid ones."""
    convs = conv_layers(model)
    if not convs:
        raise UsageError("this model has no convolutional layer")
    if name is None:
        return list(convs.items())[-1]
    if name not in convs:
        what = "is not convolutional" if name in dict(model.named_modules()) else "does not exist"
        raise UsageError(f"layer {name!r} {what}; convolutional layers: {', '.join(convs)}")
    return name, convs[name]


def check_target(target: torch.Tensor, num_classes: int, classes=None) -> None:
    bad = [int(t) for t in target if not 0 <= int(t) < num_classes]
    if bad:
        names = f" ({', '.join(classes)})" if classes else ""
        raise UsageError(f"class {bad[0]} does not exist: valid classes are 0..{num_classes - 1}{names}")


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor, **_) -> torch.Tensor:
    """|d score / d x| (Simonyan et al. 2014), shaped like x."""
    attr = _captum().Saliency(ScalarOutput(model))
    return attr.attribute(x, additional_forward_args=(target,), abs=True).detach()


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, steps: int = 32,
                         baseline: torch.Tensor | float = -1.0, internal_batch_size: int = 128,
                         return_delta: bool = False, **_):
    """Integrated gradients (Sundararajan et al. 2017) from a baseline (default: a black image, -1), shaped like
    x; the straight-line path is evaluated `internal_batch_size` images at a time to bound memory. With
    `return_delta`, also the completeness error: sum(attributions) - (score(x) - score(baseline)) per image."""
    base = torch.full_like(x, baseline) if not torch.is_tensor(baseline) else baseline.expand_as(x)
    ig = _captum().IntegratedGradients(ScalarOutput(model))
    out = ig.attribute(x, baselines=base, additional_forward_args=(target,), n_steps=steps,
                       method="gausslegendre", internal_batch_size=internal_batch_size,
                       return_convergence_delta=return_delta)
    return (out[0].detach(), out[1].detach()) if return_delta else out.detach()


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, layer: str | None = None,
             **_) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at `layer` (default: the last convolution): (B, 1, H, W), ReLU'd and
    upsampled bilinearly to the input."""
    _, module = find_layer(model, layer)
    cam = _captum().LayerGradCam(ScalarOutput(model), module)
    maps = cam.attribute(x, additional_forward_args=(target,), relu_attributions=True)
    return _captum().LayerAttribution.interpolate(maps, tuple(x.shape[-2:]), "bilinear").detach()


ATTRIBUTIONS = {"saliency": saliency, "integrated-gradients": integrated_gradients, "grad-cam": grad_cam}


def attribute(name: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
              **kwargs) -> torch.Tensor:
    """One attribution by name; `target` None explains each image's predicted class."""
    if name not in ATTRIBUTIONS:
        raise UsageError(f"unknown attribution {name!r}; choose from {', '.join(ATTRIBUTIONS)}")
    model = model.eval()
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(1)
    with torch.enable_grad():
        return ATTRIBUTIONS[name](model, x.detach().clone().requires_grad_(), torch.as_tensor(target), **kwargs)
