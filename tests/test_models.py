import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imagegen.models import EvaluatorNet, SeedClassifier, build_model
from imagegen.models.gan import ClassBatchNorm, minibatch_std
from imagegen.models.layers import Conv2d
from imagegen.models.unet import attention_keys


def test_seed_classifier_is_exactly_the_seed_network():
    net = SeedClassifier()
    layers = list(net.features) + [net.head]
    kinds = [type(m) for m in layers]
    # Conv2D(ReLU) -> MaxPool, computed as max pooling then ReLU: the same function (next test), 4x fewer values
    assert kinds == [Conv2d, nn.MaxPool2d, nn.ReLU, nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    conv, pool, dense, head = layers[0], layers[1], layers[4], layers[6]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (1, 32, (3, 3), (0, 0))
    assert pool.kernel_size == 2 and (dense.in_features, dense.out_features) == (13 * 13 * 32, 128)
    assert (head.in_features, head.out_features) == (128, 10)
    # Keras' model.summary() for the same network: 320 + 692,352 + 1,290 parameters
    assert sum(p.numel() for p in net.parameters()) == 693_962
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "silu"])
def test_pooling_before_the_activation_is_the_same_network(act):
    torch.manual_seed(0)
    net = SeedClassifier(image_size=12, activation=act)
    conv, dense, head = net.features[0], net.features[4], net.head
    x = torch.randn(8, 1, 12, 12)
    f = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "silu": F.silu}[act]
    seed_order = head(f(dense(F.max_pool2d(f(conv(x)), 2).flatten(1))))  # as written: activation, then pooling
    ours = net(x)
    assert torch.allclose(ours, seed_order, atol=1e-6)
    params = list(net.parameters())
    for a, b in zip(torch.autograd.grad(ours.square().sum(), params),
                    torch.autograd.grad(seed_order.square().sum(), params), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert isinstance(net.features[1], nn.SiLU if act == "silu" else nn.MaxPool2d)  # SiLU is not monotone


@pytest.mark.parametrize("act,cls", [("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh), ("silu", nn.SiLU)])
def test_seed_choices_are_switchable(act, cls):
    net = SeedClassifier(activation=act, pooling="avg")
    assert isinstance(net.features[1], cls) and isinstance(net.features[2], nn.AvgPool2d)


def test_bad_choices_name_the_valid_ones():
    with pytest.raises(ValueError, match="relu, silu, tanh, sigmoid"):
        SeedClassifier(activation="gelu")
    with pytest.raises(ValueError, match="max, avg"):
        SeedClassifier(pooling="median")


@pytest.mark.parametrize("cin,pad,stride", [(1, 0, 1), (3, 1, 2), (2, 1, 1)])
def test_patch_convolution_matches_conv2d(cin, pad, stride):
    torch.manual_seed(0)
    conv = Conv2d(cin, 5, 3, padding=pad, stride=stride)
    x = torch.randn(4, cin, 9, 11, requires_grad=True)
    y = conv(x)
    ref = F.conv2d(x, conv.weight, conv.bias, stride, pad)
    assert torch.allclose(y, ref, atol=1e-5)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    ref_grads = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_evaluator_features_and_odd_sizes():
    for side in (8, 28, 32):
        net = EvaluatorNet(in_channels=3, image_size=side, num_classes=4, width=8, feature_dim=24).eval()
        x = torch.randn(2, 3, side, side)
        assert net.features(x).shape == (2, 24) and net(x).shape == (2, 4)


def test_build_model_rejects_unknown_kind():
    assert isinstance(build_model("seed-classifier", {"num_classes": 3}), SeedClassifier)
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("gpt", {})


def test_spectral_norm_bounds_every_discriminator_weight_at_one():
    d = build_model("dcgan-discriminator", {"in_channels": 1, "image_size": 28, "num_classes": 10, "width": 8,
                                            "spectral_norm": True})
    for _ in range(30):  # each training-mode call runs one power iteration
        d(torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
    d.eval()
    layers = [m for m in d.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding)]
    assert len(layers) == 4  # two convolutions, the head, the class projection
    for m in layers:
        top = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert top == pytest.approx(1.0, abs=0.05)
    plain = build_model("dcgan-discriminator", {"in_channels": 1, "image_size": 28, "num_classes": 10, "width": 8})
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())


def test_minibatch_std_lets_the_discriminator_see_a_collapsed_batch():
    d = build_model("dcgan-discriminator", {"in_channels": 1, "image_size": 28, "num_classes": 10, "width": 8,
                                            "minibatch_std": 4})
    x, y = torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    collapsed = x[:1].expand(8, -1, -1, -1)
    spread = minibatch_std(d.body(x), 4)
    assert spread.shape == (8, 1, 7, 7) and (spread > 0).all()
    assert minibatch_std(d.body(collapsed), 4).abs().max() < 1e-3  # identical images: no spread
    # an image's score depends on the others in its group: the same image scores differently beside copies of
    # itself than beside different images; groups do not mix (image i is in group i % 2)
    first_alone, first_mixed = d(collapsed, y)[0], d(torch.cat([x[:1], x[1:]]), y)[0]
    assert not torch.isclose(first_alone, first_mixed)
    swapped = x.clone()
    swapped[1] = torch.randn(1, 28, 28)  # image 1 is in the other group than image 0
    assert torch.isclose(d(x, y)[0], d(swapped, y)[0])
    grad = torch.autograd.grad(d(collapsed.clone().requires_grad_(True), y).sum(), d.class_proj.weight)[0]
    assert torch.isfinite(grad).all()  # zero spread still has a finite gradient


def test_gan_generator_class_matters_as_much_as_the_latent_at_init():
    g = build_model("dcgan-generator", {"out_channels": 1, "image_size": 28, "num_classes": 10, "width": 8,
                                        "conditioning": "add"}).eval()
    z, zeros, ones = torch.randn(64, g.z_dim), torch.zeros(64, dtype=torch.long), torch.ones(64, dtype=torch.long)
    by_class = (g(z, zeros) - g(z, ones)).abs().mean()
    by_latent = (g(z, zeros) - g(z.roll(1, 0), zeros)).abs().mean()
    assert by_class > 0.3 * by_latent


def test_class_batchnorm_applies_the_scale_and_shift_of_each_image_class():
    cbn = ClassBatchNorm(3, 2, dims=2)
    with torch.no_grad():
        cbn.scale.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [2.0, 3.0, 4.0]]))
        cbn.shift.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]]))
    h = torch.randn(4, 3, 5, 5)
    normed = F.batch_norm(h, None, None, training=True)
    out = cbn(h, torch.tensor([0, 1, 0, 1]))
    torch.testing.assert_close(out[[0, 2]], normed[[0, 2]])
    torch.testing.assert_close(out[[1, 3]], normed[[1, 3]] * torch.tensor([2.0, 3.0, 4.0])[:, None, None]
                               + torch.tensor([1.0, -1.0, 0.5])[:, None, None])
    unlabelled = normed * torch.tensor([1.5, 2.0, 2.5])[:, None, None] + torch.tensor([0.5, -0.5, 0.25])[:, None, None]
    torch.testing.assert_close(cbn(h, None), unlabelled)  # no labels: the classes' mean scale and shift


def test_gan_generator_conditioned_by_norm_leaves_the_latent_to_itself():
    kw = {"out_channels": 1, "image_size": 28, "num_classes": 10, "width": 8}
    g = build_model("dcgan-generator", {**kw, "conditioning": "norm"})
    norms = [m for m in g.modules() if isinstance(m, ClassBatchNorm)]
    assert g.class_emb is None and len(norms) == 2  # after the projection and the one hidden layer at 14x14
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and m.affine for m in g.modules())
    with torch.no_grad():
        norms[1].shift.weight[3] += 5.0  # class 3 only
    z = torch.randn(8, g.z_dim)
    y = torch.tensor([0, 3] * 4)
    moved = (g.eval()(z, y) - g(z, torch.zeros(8, dtype=torch.long))).abs().flatten(1).amax(1)
    assert (moved[1::2] > 0.1).all() and (moved[0::2] == 0).all()
    with pytest.raises(ValueError, match="unknown GAN conditioning 'concat'; choose one of norm, add"):
        build_model("dcgan-generator", {**kw, "conditioning": "concat"})


def test_unet_takes_widths_whose_skip_concatenations_eight_groups_do_not_divide():
    net = build_model("unet", {"in_channels": 1, "image_size": 12, "num_classes": 3, "channels": [12, 24],
                               "attention": [False, False]})  # 12 + 24 = 36 channels meet in the up path
    norms = {m.num_channels: m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)}
    assert norms[36] == 6 and norms[24] == 6 and norms[12] == 3
    x = torch.randn(2, 1, 12, 12)
    assert net(x, torch.rand(2), torch.tensor([0, 2])).shape == x.shape


@pytest.mark.parametrize(("c", "size"), [(1, 28), (3, 30)])
def test_unet_patch_runs_its_levels_at_a_fraction_of_the_resolution(c, size):
    net = build_model("unet", {"in_channels": c, "image_size": size, "num_classes": 3, "channels": [8, 16],
                               "attention": [False, True], "patch": 2})
    seen = []
    net.stem.register_forward_hook(lambda _m, inputs, _out: seen.append(tuple(inputs[0].shape)))
    net.out[-1].register_forward_hook(lambda _m, _inputs, out: seen.append(tuple(out.shape)))
    nn.init.normal_(net.out[-1].weight)  # zero at init: give every output pixel something to say
    x = torch.randn(2, c, size, size)
    out = net(x, torch.rand(2), torch.tensor([0, 2]))
    side = -(-size // 4) * 4 // 2  # padded to patch x 2 ** (levels - 1), then folded
    assert seen == [(2, 4 * c, side, side), (2, 4 * c, side, side)]  # in and out of the levels: folded
    assert out.shape == x.shape and out.abs().min() > 0  # unfolded and cropped back: every pixel computed
    with pytest.raises(ValueError, match="patch must be a whole number >= 1, got 0"):
        build_model("unet", {"patch": 0})


@pytest.mark.parametrize("size", [1, 7, 14])
def test_unet_upsampling_as_one_transposed_convolution_is_nearest_upsampling_then_the_convolution(size):
    from imagegen.models.unet import _Upsample

    torch.manual_seed(0)
    up = _Upsample(5)
    nn.init.normal_(up.conv.bias)
    x = torch.randn(3, 5, size, size, requires_grad=True)
    plain = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    out = up(x, None)
    assert out.shape == (3, 5, 2 * size, 2 * size)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
    # the conv's own weights are what trains: the gradients through both forms agree
    g_fold = torch.autograd.grad(out.square().sum(), up.conv.weight)[0]
    g_plain = torch.autograd.grad(plain.square().sum(), up.conv.weight)[0]
    torch.testing.assert_close(g_fold, g_plain, atol=1e-4, rtol=1e-4)


def test_unet_upsampling_constant_moves_with_the_module_and_stays_out_of_artifacts():
    from imagegen.models.unet import _Upsample

    up = _Upsample(4).to(torch.float64)  # a move (dtype here; device on a GPU) reaches the constant too
    assert up.fold.dtype == torch.float64 and "fold" not in up.state_dict()  # artifacts keep their layout
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(up(x, None), up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))


def test_a_unet_without_attention_is_the_same_network_less_the_attention_term():
    kw = {"in_channels": 1, "image_size": 8, "num_classes": 3, "channels": [8, 16], "attention": [False, True]}
    full = build_model("unet", kw)
    for m in full.modules():  # every output layer is zero at init: give each a say, the attention's too
        if isinstance(m, nn.Conv2d) and not m.weight.any():
            nn.init.normal_(m.weight, std=0.3)
    lean = build_model("unet", {**kw, "attention": [False, False], "mid_attention": False})
    assert not any(type(m).__name__ == "Attention" for m in lean.modules())
    missing, unexpected = lean.load_state_dict(full.state_dict(), strict=False)
    assert not missing and set(unexpected) == attention_keys(full) and any(k.startswith("mid.1.") for k in unexpected)
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 2])
    assert not torch.allclose(lean(x, t, y), full(x, t, y), atol=1e-3)  # the attention did add something
    for m in full.modules():  # silence every attention layer: what remains is the lean network
        if type(m).__name__ == "Attention":
            nn.init.zeros_(m.proj.weight)
            nn.init.zeros_(m.proj.bias)
    torch.testing.assert_close(lean(x, t, y), full(x, t, y))
