"""The public sampling API: load a generator and draw images (`generator.py`), the checks of sampling settings
(`checks.py`), one validated request for all of it (`request.py`), and the lean inference backends a UNet can run
on (`backends.py`: onnxruntime, AOTInductor, CUDA graphs)."""

from .checks import check_sampling
from .generator import (
    GENERATOR_KINDS,
    Generator,
    StackedRandom,
    data_labels,
    generate,
    generate_from,
    generate_many,
    image_seed,
    latent_shape,
    load_generator,
    run_settings,
    sample_labels,
    sigmas_for,
)
from .request import SampleRequest, Samples, class_index, drawn_with, sample, sample_many

__all__ = [
    "GENERATOR_KINDS",
    "Generator",
    "SampleRequest",
    "Samples",
    "StackedRandom",
    "check_sampling",
    "class_index",
    "data_labels",
    "drawn_with",
    "generate",
    "generate_from",
    "generate_many",
    "image_seed",
    "latent_shape",
    "load_generator",
    "run_settings",
    "sample",
    "sample_labels",
    "sample_many",
    "sigmas_for",
]
