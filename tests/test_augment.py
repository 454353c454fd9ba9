"""Non-leaking augmentation, recipes that follow the image size, and evaluation labels that follow the data."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from imagegen.cli import main
from imagegen.config import GenConfig, UNetConfig, load
from imagegen.errors import UsageError
from imagegen.methods.augment import AUGMENT_DIM, augment
from imagegen.methods.diffusion import flow_loss
from imagegen.models import UNet, build_model
from imagegen.sampling import data_labels, load_generator
from imagegen.train.recipes import fit_unet, network_configs, unet_for


def images(b=64, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def test_nothing_is_augmented_at_p_zero_and_the_label_says_so():
    x = images()
    out, labels = augment(x, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(out, x) and labels.shape == (64, AUGMENT_DIM) and not labels.any()


def test_a_zero_label_means_the_image_as_it_is_and_a_mirror_label_a_mirror():
    x = images(512)
    out, labels = augment(x, 0.5, torch.Generator().manual_seed(2))
    untouched = labels.abs().sum(1) == 0
    mirrored = (labels[:, 0] == 1) & (labels[:, 1:].abs().sum(1) == 0)
    moved = ~untouched & ~mirrored
    assert untouched.sum() > 10 and mirrored.sum() > 3 and moved.sum() > 100
    assert torch.equal(out[untouched], x[untouched])
    assert torch.allclose(out[mirrored], x[mirrored].flip(3), atol=1e-5)
    assert (out[moved] - x[moved]).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # the others did change


def test_augmentation_is_a_function_of_the_generator():
    x = images()
    a = augment(x, 0.3, torch.Generator().manual_seed(5))
    b = augment(x, 0.3, torch.Generator().manual_seed(5))
    c = augment(x, 0.3, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_a_rotation_keeps_the_picture_and_its_label_is_on_the_unit_circle():
    x = torch.zeros(256, 1, 16, 16)
    x[:, :, 4:12, 6:10] = 1.0  # a bar
    out, labels = augment(x, 1.0, torch.Generator().manual_seed(3))
    sin, cos = labels[:, 3], labels[:, 4] + 1
    assert torch.allclose(sin**2 + cos**2, torch.ones(256), atol=1e-5)
    # the bar's mass moves but is kept within a factor of the scale change (reflection padding adds copies at most)
    assert (out.sum(dim=(1, 2, 3)) > 0.25 * x[0].sum()).all()


def test_the_network_reads_the_augmentation_label_only_when_given():
    torch.manual_seed(0)
    net = UNet(in_channels=3, image_size=12, num_classes=2, channels=(8, 16), attention=(False, True),
               augment_dim=AUGMENT_DIM)
    for p in net.parameters():  # zero-initialised layers (the head, each block's last) would hide every difference
        torch.nn.init.normal_(p, std=0.2)
    x, t, y = images(4), torch.full((4,), 0.5), torch.tensor([0, 1, 0, 1])
    plain = net(x, t, y)
    assert torch.allclose(net(x, t, y, torch.zeros(4, AUGMENT_DIM)), plain, atol=1e-6)  # zero = none
    assert not torch.allclose(net(x, t, y, torch.ones(4, AUGMENT_DIM)), plain, atol=1e-4)
    g = torch.Generator().manual_seed(0)
    with_labels = flow_loss(net, x, y, generator=g, augment_labels=torch.ones(4, AUGMENT_DIM))
    g = torch.Generator().manual_seed(0)
    assert not torch.allclose(flow_loss(net, x, y, generator=g), with_labels)


def test_only_denoising_methods_take_the_augmentation():
    assert load(GenConfig, flags={"method.name": "edm", "method.augment": "0.2"}).method.augment == 0.2
    for method in ("gan", "vae"):
        with pytest.raises(UsageError, match=f"^method {method} has no setting augment"):
            load(GenConfig, flags={"method.name": method, "method.augment": "0.2"})
    with pytest.raises(UsageError, match="method.augment must be in"):
        load(GenConfig, flags={"method.augment": "1.5"})
    cfg = load(GenConfig, flags={"method.augment": "0.2"})
    assert network_configs(cfg, (3, 32, 32), 9)["net"][1]["augment_dim"] == AUGMENT_DIM
    assert network_configs(GenConfig(), (3, 32, 32), 9)["net"][1]["augment_dim"] == 0


@pytest.mark.parametrize("shape, patch, channels, attention", [
    ((1, 28, 28), 1, (16, 32, 64), (False, False, True)),  # the Fashion-MNIST recipe as it was
    ((3, 32, 32), 2, (32, 64, 128), (False, False, True)),  # 16 -> 8 -> 4 after the patch
    ((3, 64, 64), 2, (32, 64, 128, 128), (False, False, False, True)),  # four levels
    ((1, 8, 8), 1, (16, 32), (False, True)),
])
def test_the_unet_follows_the_image_size(shape, patch, channels, attention):
    assert unet_for(shape) == {"patch": patch, "channels": channels, "attention": attention}
    m = fit_unet(UNetConfig(), shape)
    assert (m.patch, m.channels, m.attention) == (patch, channels, attention)
    net = build_model("unet", network_configs(GenConfig(model=m), shape, 3)["net"][1])
    assert net(torch.zeros(2, *shape), torch.ones(2), torch.zeros(2, dtype=torch.long)).shape == (2, *shape)


def test_what_a_user_gives_is_kept_and_the_rest_fits_it():
    m = fit_unet(UNetConfig(channels=(8, 16, 32, 64)), (3, 32, 32))
    assert m.channels == (8, 16, 32, 64) and m.attention == (False, False, False, True) and m.patch == 2
    m = fit_unet(UNetConfig(attention=(True, False)), (3, 64, 64))
    assert m.channels == (32, 64) and m.attention == (True, False)
    assert fit_unet(UNetConfig(patch=1), (3, 32, 32)).channels == (32, 64, 128, 128)  # one level more unpatched


def test_evaluation_labels_follow_the_training_datas_mix_of_classes():
    gen = SimpleNamespace(meta={"class_counts": [600, 100, 300]}, num_classes=3)
    labels = data_labels(gen, 1000)
    assert np.bincount(labels).tolist() == [600, 100, 300]
    assert np.bincount(labels[:100]).tolist() == [60, 10, 30]  # spread out, not in blocks
    assert np.bincount(data_labels(gen, 7), minlength=3).sum() == 7
    old = SimpleNamespace(meta={}, num_classes=3)  # an artifact without counts: classes in turn
    assert data_labels(old, 6).tolist() == [0, 1, 2, 0, 1, 2]
    odd = SimpleNamespace(meta={"class_counts": ["x", 1, 2]}, num_classes=3)
    assert data_labels(odd, 3).tolist() == [0, 1, 2]


def test_a_run_saves_the_chosen_network_and_trains_with_augmentation(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--images", "64", "--batch-size", "32", "--out", str(run),
            "--no-progress", "--set", "method.augment=0.5", "--set", "train.eval_samples=0",
            "--set", "sample.steps=2", "--set", "train.warmup_images=32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "network: UNet widths 16,32, patch 1, self-attention at level 2" in out
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["channels"] == [16, 32] and saved["model"]["patch"] == 1 and saved["method"]["augment"] == 0.5
    art = json.loads((run / "model.json").read_text())
    assert art["config"]["augment_dim"] == AUGMENT_DIM and len(art["meta"]["class_counts"]) == 10
    gen = load_generator(run, "cpu", backend="torch")
    assert gen.net.augment_emb is not None and gen.net.augment_emb.weight.abs().sum() > 0  # it was trained


def test_a_generator_trains_on_a_stratified_share_of_the_data(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--images", "32", "--batch-size", "32", "--out", str(run),
            "--no-progress", "--set", "data.subset=0.1", "--set", "train.eval_samples=0", "--set", "sample.steps=1",
            "--set", "model.channels=8,16"]
    assert main(argv) == 0
    assert "flow on digits: 143 images" in capsys.readouterr().out  # 10% of each class of 143-146, rounded
    counts = json.loads((run / "model.json").read_text())["meta"]["class_counts"]
    assert sum(counts) == 143 and max(counts) - min(counts) <= 1
    assert main(["classify", "train", "--dataset", "digits", "--set", "data.subset=0.5"]) == 2
    assert "data.subset is read by generator training" in capsys.readouterr().err
