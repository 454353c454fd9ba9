"""The checks of sampling settings: one place that refuses impossible steps, samplers, guidance weights and
intervals with a UsageError naming the setting, for the CLI, the server, the config and the library alike."""

from __future__ import annotations

import math
import numbers

from ..config import MAX_BATCH, MAX_GUIDANCE, MAX_STEPS
from ..errors import UsageError
from ..methods.guidance import check_interval
from ..methods.samplers import SAMPLERS


def check_sampling(*, steps: int | None = None, sampler: str | None = None, guidance_interval=None,
                   batch_size: int | None = None, guidance: float | None = None, eta: float | None = None,
                   autoguidance: float | None = None, autoguidance_interval=None, prefix: str = "") -> None:
    """Refuse impossible sampling settings with a UsageError naming the setting (`prefix`: e.g. "sample." for a
    config section); None is a setting not given. The one check behind a SampleRequest, `generate`, `imagegen
    train`'s early check and `imagegen distill`: non-finite or absurd numbers are refused here, never drawn."""
    if sampler is not None and sampler not in SAMPLERS:
        raise UsageError(f"unknown {prefix}sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if steps is not None:
        check_whole(steps, f"{prefix}steps", 1, MAX_STEPS)
    if batch_size is not None:
        check_whole(batch_size, f"{prefix}batch_size", 1, MAX_BATCH)
    if guidance is not None:
        check_number(guidance, f"{prefix}guidance", 0.0, MAX_GUIDANCE, "0 = unconditional, 1 = none")
    if autoguidance is not None:
        check_number(autoguidance, f"{prefix}autoguidance", 0.0, MAX_GUIDANCE, "1 = none")
    if eta is not None:
        check_number(eta, f"{prefix}eta", 0.0, 1.0, "0 = deterministic, 1 = ancestral")
        if eta > 0 and sampler is not None and sampler != "ddim":
            raise UsageError(f"{prefix}eta is a ddim setting; the {sampler} sampler does not read it")
    for name, interval in (("guidance_interval", guidance_interval), ("autoguidance_interval", autoguidance_interval)):
        if interval is not None:
            try:
                check_interval(interval)
            except ValueError as e:
                raise UsageError(f"{prefix}{name}: {e}") from None


def check_whole(value, name: str, lo: int, hi: int) -> None:
    """A whole number (not a bool, not a float) in lo..hi, else a UsageError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be a whole number, got {value!r}")
    if value < lo:
        raise UsageError(f"{name} must be >= {lo}, got {value}")
    if value > hi:
        raise UsageError(f"{name} must be at most {hi:,}, got {value:,}: more is a typo, not a plan")


def check_number(value, name: str, lo: float, hi: float, meaning: str = "") -> None:
    """A finite real number in [lo, hi], else a UsageError naming it (NaN and inf fail every comparison)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")
    if not lo <= value <= hi:
        raise UsageError(f"{name} must be between {lo:g} and {hi:g}{f' ({meaning})' if meaning else ''}, "
                         f"got {value:g}")
