"""One validated sampling request from the edge to the sampler: classes by index or name, the run's settings
where the request leaves them unset, the same images as `generate` for the same (seed, i)."""

import numpy as np
import pytest

import imagegen
from imagegen.errors import UsageError
from imagegen.sampling import SampleRequest, generate, load_generator, run_settings, sample
from imagegen.train import loop

from .test_train import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "flow"
    loop.train(tiny_config(images=64), out, show_progress=False, log=lambda s: None)
    return out


def test_a_request_draws_what_generate_draws_with_the_runs_own_settings(run):
    gen = load_generator(run, "cpu", "torch")
    got = sample(SampleRequest(str(run), n=12, seed=3, backend="torch", device="cpu"), gen)
    labels = np.arange(12) % gen.num_classes
    assert np.array_equal(got.labels, labels)
    assert np.array_equal(got.images, generate(gen, labels, seed=3, **run_settings(gen)))
    assert got.describe()["steps"] == run_settings(gen)["steps"] and got.describe()["n"] == 12


def test_classes_by_name_or_index_cycle_over_the_images(run):
    gen = load_generator(run, "cpu", "torch")
    names = gen.classes
    request = SampleRequest(str(run), n=5, classes=(names[2], "7"), steps=2, sampler="euler")
    assert request.labels(gen).tolist() == [2, 7, 2, 7, 2]
    for bad, message in ((("sweater",), "class 'sweater' does not exist"), ((10,), "class 10 does not exist")):
        with pytest.raises(UsageError, match=message):
            SampleRequest(str(run), classes=bad).labels(gen)


@pytest.mark.parametrize("change, message", [
    ({"n": 0}, "n must be between 1"), ({"n": 10**9}, "n must be between 1"), ({"seed": -1}, "seed must be >= 0"),
    ({"guidance": float("nan")}, "guidance must be a finite number"),
    ({"guidance": float("inf")}, "guidance must be a finite number"),
    ({"backend": "tpu"}, "unknown backend 'tpu'"), ({"classes": ()}, "at least one class"),
])
def test_bad_requests_are_refused_before_a_model_is_loaded(tmp_path, change, message):
    with pytest.raises(UsageError, match=message):  # the run does not even exist: nothing was loaded
        sample(SampleRequest(str(tmp_path / "missing"), **change))


def test_sampler_settings_are_checked_against_the_run(run):
    gen = load_generator(run, "cpu", "torch")
    with pytest.raises(UsageError, match="steps must be >= 1"):
        SampleRequest(str(run), steps=0).settings(gen)
    with pytest.raises(UsageError, match="unknown sampler"):
        SampleRequest(str(run), sampler="plms").settings(gen)


def test_the_request_is_public_api():
    assert imagegen.SampleRequest is SampleRequest and imagegen.sample is sample
