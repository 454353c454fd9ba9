"""imagegen: deep-learning image generation with convolutional networks."""

from importlib import import_module

__version__ = "0.1.0"

# Public API, imported lazily so that `imagegen --help` does not wait for torch.
_EXPORTS = {
    "Dataset": "data", "load_dataset": "data", "ImagegenError": "errors", "UsageError": "errors",
    "SeedClassifier": "models", "EvaluatorNet": "models", "load_artifact": "artifacts", "save_artifact": "artifacts",
    "fid": "metrics", "kid": "metrics", "precision_recall": "metrics", "evaluate": "metrics",
    "load_evaluator": "metrics", "train_evaluator": "train.evaluator", "load_samples": "metrics",
    "save_samples": "metrics",
    "UNet": "models", "Generator": "models", "Discriminator": "models", "VAE": "models", "GenConfig": "config",
    "train_generator": "train.loop", "load_generator": "sampling", "generate": "sampling",
    "SampleRequest": "sampling", "sample": "sampling",
}
# `imagegen.train` is the training package, so the loop's `train` is exported under a name of its own
_RENAMED = {"train_generator": "train"}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), _RENAMED.get(name, name))
    raise AttributeError(f"module 'imagegen' has no attribute {name!r}")
