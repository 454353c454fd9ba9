import numpy as np
import pytest
import torch

from imagegen.config import FitConfig
from imagegen.data import load_dataset
from imagegen.models import SeedClassifier
from imagegen.train.fit import augment, evaluate, fit
from imagegen.train.optim import lr_at, make_optimizer
from imagegen.utils import keep_freed_memory


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_seed_classifier_learns_digits(digits):
    train, test = digits
    torch.manual_seed(0)
    net = SeedClassifier(image_size=8)
    before = evaluate(net, test)[1]
    history = fit(net, train, test, FitConfig(epochs=3), generator=torch.Generator().manual_seed(0),
                  show_progress=False)
    assert before < 0.3 and history[-1].test_accuracy > 0.85
    assert history[-1].loss < history[0].loss and history[-1].seconds > 0


def test_training_is_reproducible(digits):
    train, _ = digits
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        net = SeedClassifier(image_size=8)
        fit(net, train.subset(np.arange(200)), None, FitConfig(epochs=1, augment="shift"),
            generator=torch.Generator().manual_seed(5), show_progress=False)
        runs.append(net.head.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("opt,loss", [("sgd", "mse"), ("adamw", "cross-entropy")])
def test_other_optimisers_and_losses_learn(digits, opt, loss):
    train, test = digits
    torch.manual_seed(0)
    net = SeedClassifier(image_size=8, activation="tanh", pooling="avg")
    lr = 0.05 if opt == "sgd" else 1e-3
    h = fit(net, train, test, FitConfig(epochs=3, optimizer=opt, loss=loss, lr=lr),
            generator=torch.Generator().manual_seed(0), show_progress=False)
    assert h[-1].test_accuracy > 0.7


def test_unknown_optimiser_and_loss():
    with pytest.raises(ValueError, match="sgd, adam, adamw"):
        make_optimizer("rmsprop", [torch.zeros(1, requires_grad=True)], 1e-3)
    with pytest.raises(ValueError, match="unknown loss"):
        fit(SeedClassifier(image_size=8), load_dataset("digits", "test"), None, FitConfig(loss="hinge"),
            generator=torch.Generator(), show_progress=False)


def test_shift_augmentation_translates_content():
    x = -torch.ones(64, 1, 8, 8)
    x[:, :, 3, 3] = 1.0
    out = augment(x, "shift", torch.Generator().manual_seed(0))
    pos = (out[:, 0] == 1).nonzero()[:, 1:]
    assert len(pos) == 64 and pos.min() >= 2 and pos.max() <= 4 and len({tuple(p.tolist()) for p in pos}) == 9
    assert augment(x, "none", torch.Generator()) is x


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, "cosine") == 1.0
    assert lr_at(50, 100, 1.0, "cosine") == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, "cosine") == pytest.approx(0.0)
    assert lr_at(4, 100, 1.0, "constant", warmup=10) == pytest.approx(0.5)


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_the_fused_optimizer_step_follows_the_loop(digits, opt):
    train, _ = digits
    nets, histories = [], []
    for fused in (False, True):
        torch.manual_seed(2)
        net = SeedClassifier(image_size=8)
        histories.append(fit(net, train.subset(np.arange(256)), None,
                             FitConfig(epochs=2, optimizer=opt, lr=1e-2 if opt == "sgd" else 1e-3,
                                       fused_optimizer=fused), generator=torch.Generator().manual_seed(3),
                             show_progress=False))
        nets.append(net)
    for a, b in zip(*histories, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-4) and a.accuracy == pytest.approx(b.accuracy, abs=1 / 256)
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_freed_memory_is_kept_on_glibc():
    import os

    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        glibc = False
    assert keep_freed_memory() is glibc
