"""The values a setting may take: ranges and comma lists (checked when a config is built), the limits beyond
which a value is a typo, and the typed kinds of number and choice the config sections use (sections.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from ..errors import UsageError


@dataclass(frozen=True)
class Range:
    """The values a number may take: above `gt` or at least `ge`, and below `lt` or at most `le`; infinity only
    with `inf` (NaN never)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    inf: bool = False

    def check(self, value, key: str) -> None:
        bounds = ((self.gt, lambda b: value > b), (self.ge, lambda b: value >= b), (self.lt, lambda b: value < b),
                  (self.le, lambda b: value <= b))
        if not all(ok(b) for b, ok in bounds if b is not None):
            raise UsageError(f"config key {key} must be {self}; got {value!r}")

    def __str__(self) -> str:
        def show(b) -> str:  # a whole bound exactly (a seed's 9,223,372,036,854,775,807), others short
            return f"{b:,}" if isinstance(b, int) and abs(b) >= 10**6 else f"{b:g}"

        if self.lt is None and self.le is None:
            return f"> {show(self.gt)}" if self.gt is not None else f">= {show(self.ge)}"
        low = f"({show(self.gt)}" if self.gt is not None else f"[{show(self.ge)}"
        return f"in {low}, {show(self.lt)})" if self.lt is not None else f"in {low}, {show(self.le)}]"


@dataclass(frozen=True)
class CommaList:
    """A string of comma-separated names from `choices` ("" = none of them)."""

    choices: tuple[str, ...]

    def check(self, value: str, key: str) -> None:
        wrong = [p for p in (p.strip() for p in value.split(",")) if p and p not in self.choices]
        if wrong:
            raise UsageError(f"config key {key} takes a comma-separated list of {', '.join(self.choices)}; "
                             f"got {wrong[0]!r}")


# Sampling limits, here and in every sampling request (sampling.check_sampling): beyond them a value is a typo,
# and NaN or inf guidance drew all-black images without a word.
MAX_STEPS = 10_000  # sampler steps (1,000 is the longest schedule in the literature, DDPM's)
MAX_GUIDANCE = 100.0  # classifier-free guidance scale (useful ones are 1-10)
MAX_BATCH = 16_384  # images per network call
MAX_IMAGES = 10_000_000  # images drawn (or pairs made) in one request: more is a typo (10 million 28x28 images: 8 GB)
MAX_SEED = 2**63 - 1  # seeds are mixed into 63-bit per-image seeds (sampling.image_seed); JSON keeps them exact
# Training limits, here and in the flags (cli.shared): a seed torch.manual_seed can take, a learning rate that
# can converge, residual blocks a step can run in minutes (1,000 per level made one step last over 9 minutes)
MAX_LR = 10.0  # a learning rate above this diverges with any optimiser here
MAX_BLOCKS = 16


Positive = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Share = Annotated[float, Range(ge=0, lt=1)]  # a probability that must leave something: dropout, label dropout
Fraction = Annotated[float, Range(ge=0, le=1)]
Count = Annotated[int, Range(ge=1)]
Natural = Annotated[int, Range(ge=0)]
Seed = Annotated[int, Range(ge=0, le=MAX_SEED)]
Batch = Annotated[int, Range(ge=1, le=MAX_BATCH)]  # images per step, as --batch-size takes
LearningRate = Annotated[float, Range(gt=0, le=MAX_LR)]
NoiseLevel = Annotated[float, Range(ge=0, inf=True)]  # the top of a guidance interval may be inf (every level)
Device = Literal["auto", "cpu", "cuda"]
Schedule = Literal["cosine", "constant"]
Sampler = Literal["euler", "heun", "dpmpp-2m", "ddim"]  # methods.samplers.SAMPLERS
Bf16 = bool | Literal["auto"]  # "auto": where the device has bf16 units (utils.has_bf16_units)
