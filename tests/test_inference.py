"""The lean inference path: onnxruntime or a compiled package behind the same call as the UNet, cached exports,
clear choices."""

import numpy as np
import pytest
import torch

from imagegen.errors import ImagegenError, UsageError
from imagegen.sampling import SampleRequest, backends, generate, generate_many, load_generator, sample_many
from imagegen.train import loop
from imagegen.utils import cache_dir

from .test_train import tiny_config

pytestmark = pytest.mark.skipif(not backends.onnxruntime_available(), reason="the fast extra is not installed")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "flow"
    loop.train(tiny_config(images=64), out, show_progress=False, log=lambda s: None)
    return out


def test_onnx_backend_draws_what_torch_draws(run):
    fast, eager = load_generator(run, "cpu"), load_generator(run, "cpu", backend="torch")
    assert isinstance(fast.net, backends.OnnxUNet) and not isinstance(eager.net, backends.OnnxUNet)
    labels = np.arange(20) % 10
    a = generate(fast, labels, seed=1, steps=3, guidance=2.0, batch_size=7)
    b = generate(eager, labels, seed=1, steps=3, guidance=2.0)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # float rounding may move a pixel by one level
    assert np.array_equal(a, generate(fast, labels, seed=1, steps=3, guidance=2.0, batch_size=20))


def test_requests_drawn_together_get_the_images_each_gets_alone(run):
    gen = load_generator(run, "cpu", backend="torch")
    parts = [(np.array([1, 2, 3]), 5, 0), (np.array([7]), 9, 0), (np.array([0, 0, 4, 4, 4]), 5, 3)]
    together = generate_many(gen, parts, steps=3, guidance=2.0, batch_size=4)  # batches cross the parts
    assert [len(t) for t in together] == [3, 1, 5]
    for (labels, seed, start), got in zip(parts, together, strict=True):
        assert np.array_equal(got, generate(gen, labels, seed=seed, start=start, steps=3, guidance=2.0))
    with pytest.raises(ValueError, match="share the run"):
        sample_many([SampleRequest(str(run), n=2, steps=2), SampleRequest(str(run), n=2, steps=3)], gen)


def test_a_patched_unet_exports_as_it_computes(tmp_path):
    run = tmp_path / "patched"
    loop.train(tiny_config(images=64, **{"model.patch": 2}), run, show_progress=False, log=lambda s: None)
    fast, eager = load_generator(run, "cpu"), load_generator(run, "cpu", backend="torch")
    assert isinstance(fast.net, backends.OnnxUNet) and eager.net.patch == 2
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(6, *fast.image_shape, generator=g), torch.rand(6, generator=g), torch.arange(6)
    with torch.no_grad():
        want = eager.net(x, t, y)
    assert want.abs().max() > 0 and torch.allclose(fast.net(x, t, y), want, atol=1e-5)


def test_the_export_is_cached_once_per_model(run):
    load_generator(run, "cpu")
    before = {p: p.stat().st_mtime_ns for p in cache_dir("onnx").glob("*.onnx")}
    load_generator(run, "cpu", backend="onnx")
    after = {p: p.stat().st_mtime_ns for p in cache_dir("onnx").glob("*.onnx")}
    assert len(before) == 1 and before == after and not list(run.glob("*.onnx"))


def test_backend_choices_are_checked(run, monkeypatch):
    with pytest.raises(UsageError, match="unknown backend 'tensorrt'; choose auto, torch, onnx, compiled, cuda-graphs"):
        load_generator(run, "cpu", backend="tensorrt")
    with pytest.raises(UsageError, match="cuda-graphs backend runs UNets .* on a CUDA GPU only"):
        load_generator(run, "cpu", backend="cuda-graphs")
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    with pytest.raises(ImagegenError, match=r"pip install 'imagegen\[fast\]'"):
        load_generator(run, "cpu", backend="onnx")
    assert not isinstance(load_generator(run, "cpu").net, backends.OnnxUNet)  # auto falls back to PyTorch


def test_a_large_batch_is_split_into_parts_over_threads_with_the_same_result(run):
    gen = load_generator(run, "cpu", backend="onnx")
    net = gen.net
    net.threads = 2  # split in two, as on a 2-core machine, whatever this one has
    b = 3 * backends.CHUNK + 5  # four parts, the last one short
    x = torch.randn(b, *gen.image_shape, generator=torch.Generator().manual_seed(0))
    t, y = torch.rand(b, generator=torch.Generator().manual_seed(1)), torch.arange(b) % gen.num_classes
    calls = []
    whole = net(x, t, y)
    assert net._parts is not None  # the split path ran
    session = net._parts[1]
    run_part = session.run
    session.run = lambda out, feed: calls.append(len(feed["x"])) or run_part(out, feed)
    assert torch.equal(net(x, t, y), whole) and sorted(calls) == [5] + [backends.CHUNK] * 3
    pieces = torch.cat([net(x[i : i + 9], t[i : i + 9], y[i : i + 9]) for i in range(0, b, 9)])  # one session
    assert whole.shape == x.shape and torch.allclose(whole, pieces, atol=1e-5)
    net.split, net._parts = False, None
    assert torch.allclose(net(x, t, y), whole, atol=1e-5) and net._parts is None  # split=False: one session


needs_compiler = pytest.mark.skipif(not backends.compiler_available(), reason="no C++ compiler for AOTInductor")


@pytest.fixture(scope="module")
def compiled_cache(tmp_path_factory):
    """One cache for the compiled-backend tests, so the tiny model is compiled once (about 20 s)."""
    return tmp_path_factory.mktemp("compiled-cache")


@needs_compiler
def test_the_compiled_backend_computes_what_torch_computes_in_any_batch(run, compiled_cache, monkeypatch):
    monkeypatch.setenv("IMAGEGEN_CACHE", str(compiled_cache))
    fast, eager = load_generator(run, "cpu", backend="compiled"), load_generator(run, "cpu", backend="torch")
    net = fast.net
    assert isinstance(net, backends.CompiledUNet) and net.path.is_file()
    b = 2 * backends.PART + 3  # three parts, the last one short
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(b, *fast.image_shape, generator=g), torch.rand(b, generator=g), torch.arange(b) % 10
    with torch.no_grad():
        want, got = eager.net(x, t, y), net(x, t, y)
    err = (got - want).abs().max() / want.abs().max()
    assert got.shape == want.shape and err <= (0.05 if net.bf16 else 1e-4), err  # bf16 keeps ~3 digits
    pieces = torch.cat([net(x[i : i + 9], t[i : i + 9], y[i : i + 9]) for i in range(0, b, 9)])
    assert torch.allclose(pieces, got, atol=1e-6)  # an image's output does not depend on its batch
    null = torch.full((5,), fast.num_classes)
    assert torch.equal(net(x[:5], t[0], None), net(x[:5], t[0].expand(5), null))  # scalar noise label, null class
    labels = np.arange(20) % 10
    a = generate(fast, labels, seed=1, steps=3, guidance=2.0, batch_size=7)
    assert np.array_equal(a, generate(fast, labels, seed=1, steps=3, guidance=2.0, batch_size=20))


@needs_compiler
def test_a_compiled_package_is_made_once_per_model(run, compiled_cache, monkeypatch):
    from torch import _inductor

    monkeypatch.setenv("IMAGEGEN_CACHE", str(compiled_cache))
    load_generator(run, "cpu", backend="compiled")  # compiled by the test above, or now
    packages = {p: p.stat().st_mtime_ns for p in cache_dir("compiled").glob("*.pt2")}
    monkeypatch.setattr(_inductor, "aoti_compile_and_package", lambda *a, **k: pytest.fail("compiled again"))
    monkeypatch.setattr(backends, "compiler_available", lambda: False)  # a cached package needs no compiler
    gen = load_generator(run, "cpu", backend="compiled")
    assert len(packages) == 1 and gen.net.path in packages and not list(run.glob("*.pt2"))
    assert {p: p.stat().st_mtime_ns for p in cache_dir("compiled").glob("*.pt2")} == packages


def test_the_compiled_backend_says_what_it_needs(run, monkeypatch):
    monkeypatch.setattr(backends, "compiler_available", lambda: False)  # and the test's cache is empty
    with pytest.raises(ImagegenError, match=r"needs a C\+\+ compiler \(g\+\+ or clang\+\+"):
        load_generator(run, "cpu", backend="compiled")
    assert not list(cache_dir("compiled").glob("*"))  # nothing half-written


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graphs_draw_what_eager_float16_draws_in_any_batch(run):
    graphed, eager = load_generator(run, "cuda"), load_generator(run, "cuda", backend="torch")
    assert isinstance(graphed.net, backends.GraphedUNet)
    labels = np.arange(23) % graphed.num_classes
    # guided at sigma 1.97 and 0.50 but not at 200: each batch calls the network plain and doubled
    kw = {"steps": 3, "guidance": 2.0, "guidance_interval": (0.3, 3.0), "seed": 5}
    a = generate(graphed, labels, batch_size=10, **kw)  # parts of 10, 10 and 3
    b = generate(graphed, labels, batch_size=23, **kw)
    c = generate(eager, labels, batch_size=23, **kw)
    assert sorted(k[0] for k in graphed.net.graphs) == [3, 6, 10, 20, 23, 46]
    assert np.array_equal(a, b)  # replays of different recordings agree exactly
    assert np.abs(a.astype(int) - c.astype(int)).max() <= 2  # float16 kernels may differ from eager's in the last bit


def test_pytorch_keeps_to_one_thread_while_onnxruntime_samples(run):
    """The sampler's own PyTorch operations run on the calling thread while onnxruntime has the cores (their
    OpenMP threads' spin had taken cores from onnxruntime's); the count comes back after, and the guide, loaded
    during the call, gets the count from before."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fast, eager = load_generator(run, "cpu", backend="onnx"), load_generator(run, "cpu", backend="torch")
        assert fast.has_guide()  # the tiny run keeps one (train.guide_fraction)
        seen = {"onnx": [], "torch": []}
        labels = np.arange(6) % 10
        for name, gen in (("onnx", fast), ("torch", eager)):
            generate(gen, labels, seed=3, steps=2, autoguidance=2.0,
                     callback=lambda _s, name=name: seen[name].append(torch.get_num_threads()))
            assert torch.get_num_threads() == 2
        assert set(seen["onnx"]) == {1} and set(seen["torch"]) == {2}
        assert fast.guide().net.threads == 2
    finally:
        torch.set_num_threads(before)
