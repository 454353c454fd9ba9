"""The lean inference path: onnxruntime behind the same call as the UNet, cached exports, clear choices."""

import numpy as np
import pytest

from imagegen import inference
from imagegen.errors import ImagegenError, UsageError
from imagegen.generate import generate, load_generator
from imagegen.train import loop
from imagegen.utils import cache_dir

from .test_train import tiny_config

pytestmark = pytest.mark.skipif(not inference.onnxruntime_available(), reason="the fast extra is not installed")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "flow"
    loop.train(tiny_config(images=64), out, show_progress=False, log=lambda s: None)
    return out


def test_onnx_backend_draws_what_torch_draws(run):
    fast, eager = load_generator(run, "cpu"), load_generator(run, "cpu", backend="torch")
    assert isinstance(fast.net, inference.OnnxUNet) and not isinstance(eager.net, inference.OnnxUNet)
    labels = np.arange(20) % 10
    a = generate(fast, labels, seed=1, steps=3, guidance=2.0, batch_size=7)
    b = generate(eager, labels, seed=1, steps=3, guidance=2.0)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # float rounding may move a pixel by one level
    assert np.array_equal(a, generate(fast, labels, seed=1, steps=3, guidance=2.0, batch_size=20))


def test_the_export_is_cached_once_per_model(run):
    load_generator(run, "cpu")
    before = {p: p.stat().st_mtime_ns for p in cache_dir("onnx").glob("*.onnx")}
    load_generator(run, "cpu", backend="onnx")
    after = {p: p.stat().st_mtime_ns for p in cache_dir("onnx").glob("*.onnx")}
    assert len(before) == 1 and before == after and not list(run.glob("*.onnx"))


def test_backend_choices_are_checked(run, monkeypatch):
    with pytest.raises(UsageError, match="unknown backend 'tensorrt'; choose auto, torch, onnx"):
        load_generator(run, "cpu", backend="tensorrt")
    monkeypatch.setattr(inference, "onnxruntime_available", lambda: False)
    with pytest.raises(ImagegenError, match=r"pip install 'imagegen\[fast\]'"):
        load_generator(run, "cpu", backend="onnx")
    assert not isinstance(load_generator(run, "cpu").net, inference.OnnxUNet)  # auto falls back to PyTorch
