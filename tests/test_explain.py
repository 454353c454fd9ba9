"""imagegen.explain: attribution contracts, feature maps, generator pictures, `imagegen explain` and `report`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen.artifacts import save_artifact
from imagegen.cli import main
from imagegen.errors import UsageError
from imagegen.explain import (
    attribute,
    class_sweep,
    conv_layers,
    feature_maps,
    find_layer,
    guidance_sweep,
    latent_walk,
    mistakes,
    nearest_training,
    slerp,
    trajectory,
)
from imagegen.models import SeedClassifier, UNet
from imagegen.sampling import Generator, generate
from imagegen.train import loop

from .test_train import tiny_config


def corner_classifier(classes: int = 2, **switches) -> SeedClassifier:
    """A seed classifier on 8x8 images whose dense layer reads only the top-left pooled cell: by construction
    only the top-left 4x4 pixels (one 2x2 pool of 3x3 valid convolutions) can change its output."""
    torch.manual_seed(0)
    model = SeedClassifier(1, 8, classes, filters=4, hidden=8, **switches)
    dense = model.features[4]  # (hidden, filters * 3 * 3), flattened as (filter, row, col)
    keep = torch.zeros(4, 3, 3, dtype=torch.bool)
    keep[:, 0, 0] = True
    with torch.no_grad():
        dense.weight[:, ~keep.flatten()] = 0
    return model.eval()


@pytest.fixture
def images():
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("name", ["saliency", "integrated-gradients", "grad-cam"])
def test_attribution_maps_have_the_input_shape(name, images):
    maps = attribute(name, corner_classifier(), images, torch.tensor([0, 1, 0, 1, 0]))
    channels = 1 if name == "grad-cam" else images.shape[1]
    assert maps.shape == (5, channels, 8, 8) and torch.isfinite(maps).all() and maps.abs().sum() > 0


def test_saliency_and_grad_cam_are_what_their_papers_define(images):
    """Saliency: |d logit / d x|. Grad-CAM: ReLU(sum_k alpha_k A_k) at the last convolution, alpha_k the mean over
    positions of d logit / d A_k, upsampled bilinearly to the input. Both computed here by hand with autograd."""
    model, target = corner_classifier(), torch.tensor([0, 1, 0, 1, 0])
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    torch.testing.assert_close(attribute("saliency", model, images, target), grad.abs())
    acts = model.features[0](images)  # (B, K, 6, 6)
    (d_acts,) = torch.autograd.grad(model.head(model.features[1:](acts)).gather(1, target[:, None]).sum(), acts)
    cam = torch.relu((d_acts.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True))
    want = torch.nn.functional.interpolate(cam, size=(8, 8), mode="bilinear")
    assert want.abs().max() > 0
    torch.testing.assert_close(attribute("grad-cam", model, images, target), want.detach())


def test_integrated_gradients_are_complete(images):
    """Attributions sum to score(x) - score(baseline) (completeness, Sundararajan et al. 2017)."""
    # SiLU and average pooling (the seed's switches) make the path integrand smooth, so 32 Gauss-Legendre
    # steps integrate it almost exactly; ReLU and max-pooling would only converge slowly through their kinks
    model, target = corner_classifier(activation="silu", pooling="avg"), torch.tensor([0, 1, 1, 0, 1])
    with torch.no_grad():
        gap = model(images).gather(1, target[:, None])[:, 0] - model(-torch.ones_like(images)).gather(
            1, target[:, None])[:, 0]
    attr = attribute("integrated-gradients", model, images, target, steps=32, internal_batch_size=64)
    assert gap.abs().min() > 1e-3 and torch.allclose(attr.sum((1, 2, 3)), gap, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["saliency", "integrated-gradients"])
def test_a_planted_corner_gets_all_the_attribution(name, images):
    maps = attribute(name, corner_classifier(), images).abs()
    inside = maps[..., :4, :4].sum()
    assert inside > 0 and maps.sum() - inside < 1e-6 * inside


def test_bad_layer_and_class_are_clear_errors(images):
    model = corner_classifier()
    with pytest.raises(UsageError, match=r"layer 'conv9' does not exist; convolutional layers: features\.0"):
        attribute("grad-cam", model, images, layer="conv9")
    from imagegen.explain.attribution import check_target

    with pytest.raises(UsageError, match=r"class 7 does not exist: valid classes are 0\.\.1"):
        check_target(torch.tensor([0, 7]), 2)
    with pytest.raises(UsageError, match="choose from saliency, integrated-gradients, grad-cam"):
        attribute("lime", model, images)
    assert find_layer(model, None)[0] == "features.0" == list(conv_layers(model))[-1]


def test_feature_maps_are_each_convolutions_output(images):
    model = corner_classifier()
    maps = feature_maps(model, images[:1])
    assert list(maps) == ["features.0"]
    assert torch.allclose(maps["features.0"], model.features[0](images[:1])[0])
    with pytest.raises(ValueError, match="one image"):
        feature_maps(model, images)


def test_mistakes_are_wrong_and_most_confident_first():
    model = corner_classifier()
    x = np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
    labels = np.ones(40, np.int64)  # the model calls most of these class 0: many mistakes to rank
    idx, pred, conf = mistakes(model, x, labels, n=5)
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(x).float() / 127.5 - 1), dim=1).numpy()
    wrong = np.flatnonzero(probs.argmax(1) != 1)
    assert len(wrong) > 5  # else the test could not tell the most confident five from the rest
    best = wrong[np.argsort(-probs[wrong].max(1), kind="stable")][:5]
    assert idx.tolist() == best.tolist() and pred.tolist() == probs[best].argmax(1).tolist()
    np.testing.assert_allclose(conf, probs[best].max(1), rtol=1e-5)


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    net = UNet(1, 8, 3, channels=(8, 16), attention=(False, False)).eval().requires_grad_(False)
    for p in net.parameters():  # zero-initialised output and embeddings would make every class draw alike
        p.add_(0.2 * torch.randn_like(p))
    return Generator(net, "flow", ("a", "b", "c"), (1, 8, 8), {"dataset": "digits"}, torch.device("cpu"))


def test_trajectory_ends_in_the_samplers_output(gen):
    tr = trajectory(gen, 2, seed=3, index=4, steps=5, sampler="dpmpp-2m", guidance=2.0)
    out = generate(gen, np.array([2]), seed=3, start=4, steps=5, sampler="dpmpp-2m", guidance=2.0)
    assert tr.x.shape == (6, 1, 8, 8) and tr.denoised.shape == (5, 1, 8, 8) and len(tr.sigmas) == 6
    assert np.array_equal(tr.x[-1], out[0]) and tr.sigmas[-1] == 0 and tr.sigmas[0] > tr.sigmas[1]


def test_slerp_keeps_ends_and_norm():
    a, b = torch.randn(1, 8, 8), torch.randn(1, 8, 8)
    b = b * a.norm() / b.norm()
    z = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(z[0], a, atol=1e-5) and torch.allclose(z[-1], b, atol=1e-5)
    assert torch.allclose(z.flatten(1).norm(dim=1), a.norm().expand(5), rtol=1e-4)


def test_walk_ends_are_the_two_seeds_images_and_sweeps_match_generate(gen):
    kw = {"steps": 3, "sampler": "euler", "guidance": 1.0}
    walk = latent_walk(gen, 1, (4, 9), frames=4, **kw)
    ends = [generate(gen, np.array([1]), seed=s, **kw)[0] for s in (4, 9)]
    assert walk.shape == (4, 1, 8, 8) and np.array_equal(walk[0], ends[0]) and np.array_equal(walk[-1], ends[1])
    sweep = class_sweep(gen, 4, **kw)
    assert np.array_equal(sweep[1], ends[0]) and sweep.shape[0] == 3
    scales = guidance_sweep(gen, 1, [1.0, 3.0], seed=4, steps=3, sampler="euler")
    assert np.array_equal(scales[0], ends[0]) and not np.array_equal(scales[0], scales[1])


def test_nearest_training_finds_the_image_itself():
    train = np.random.default_rng(0).integers(0, 256, (50, 1, 8, 8), dtype=np.uint8)
    dist, idx = nearest_training(train[[7, 20]], train, k=3)
    assert idx.shape == (2, 3) and list(idx[:, 0]) == [7, 20] and np.allclose(dist[:, 0], 0, atol=1e-3)
    assert np.all(np.diff(dist, axis=1) >= 0)


@pytest.fixture
def classifier_run(tmp_path):
    run = tmp_path / "clf"
    save_artifact(run, "seed-classifier", {"in_channels": 1, "image_size": 8, "num_classes": 10, "filters": 4,
                                           "hidden": 8}, corner_classifier(10),
                  {"classes": [str(i) for i in range(10)], "dataset": "digits", "image_shape": [1, 8, 8]})
    return run


def test_explain_attributions_cli_on_samples_and_files(classifier_run, tmp_path, capsys):
    from imagegen.metrics import save_samples

    save_samples(tmp_path / "s.npz", np.full((3, 1, 8, 8), 128, np.uint8), np.array([0, 1, 0]))
    out = tmp_path / "a.png"
    assert main(["explain", "attributions", str(classifier_run), "--samples", str(tmp_path / "s.npz"),
                 "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size[0] > 200 and im.size[1] > 200
    Image.new("L", (20, 12)).save(tmp_path / "big.png")
    assert main(["explain", "attributions", str(classifier_run), str(tmp_path / "big.png")]) == 2
    assert "is 20x12; this model takes 8x8 images with 1 channel(s); pass --resize" in capsys.readouterr().err
    assert main(["explain", "attributions", str(classifier_run), str(tmp_path / "big.png"), "--resize",
                 "--layer", "head", "--methods", "grad-cam", "--out", str(out)]) == 2
    assert "layer 'head' is not convolutional; convolutional layers: features.0" in capsys.readouterr().err
    assert main(["explain", "attributions", str(classifier_run), str(tmp_path / "big.png"), "--resize",
                 "--layer", "features.0", "--methods", "grad-cam", "--out", str(out)]) == 0
    assert main(["explain", "attributions", str(classifier_run), "--class", "12", "--n", "2"]) == 2
    assert "class 12 does not exist: valid classes are 0..9" in capsys.readouterr().err


def test_explain_classifier_pictures_default_into_the_run(classifier_run):
    for what, flags in (("features", ["--index", "3"]), ("filters", []), ("mistakes", ["--n", "3"])):
        assert main(["explain", what, str(classifier_run), *flags]) == 0
        assert (classifier_run / "explain" / f"{what}.png").stat().st_size > 1000
    assert main(["explain", "features", str(classifier_run), "--index", "100000"]) == 2


def test_training_logs_the_grid_fid_and_report_gathers_a_run(tmp_path):
    """Digits has a pinned evaluator (digits-v1): a run finds it, and no evaluator is trained first."""
    run = tmp_path / "run"
    loop.train(tiny_config(images=96, **{"train.grid_minutes": 0}), run, show_progress=False, log=lambda s: None)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    grid = [x for x in lines if "grid_fid" in x]
    assert len(grid) == len(list((run / "grids").glob("*.png"))) >= 3
    assert all(np.isfinite(x["grid_fid"]) and 0 <= x["grid_class_accuracy"] <= 1 for x in grid)
    assert main(["report", str(run), "--device", "cpu"]) == 0
    page = (run / "report.html").read_text()
    for name in ("trajectory", "guidance", "walk", "nearest"):
        assert (run / "explain" / f"{name}.png").is_file() and f"<figcaption>{name}</figcaption>" in page
    assert page.count("data:image/png;base64,") >= 7 and "http" not in page.replace("http-equiv", "")


def test_report_of_a_classifier_run_draws_its_explanations(classifier_run, capsys):
    assert main(["report", str(classifier_run)]) == 0
    page = (classifier_run / "report.html").read_text()
    for name in ("attributions", "mistakes", "features", "filters"):
        assert f"<figcaption>{name}</figcaption>" in page
    assert main(["report", str(classifier_run / "nothing")]) == 1
    assert "is not a run directory" in capsys.readouterr().err
