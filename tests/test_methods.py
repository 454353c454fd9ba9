"""Contracts of the generator networks, objectives and samplers, on tiny models and Gaussian data."""

import math

import pytest
import torch

from imagegen.methods import diffusion, gan, samplers, vae
from imagegen.methods.guidance import guided
from imagegen.models import VAE, Discriminator, Generator, UNet

SD = 0.5  # standard deviation of the Gaussian "data" whose ideal denoiser is known exactly


def gaussian_denoiser(x, sigma, y=None):
    """E[x0 | x0 + sigma eps] for x0 ~ N(0, SD^2): the exact denoiser of Gaussian data."""
    return x * SD**2 / (SD**2 + torch.as_tensor(sigma) ** 2)


@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 10), ((3, 16, 16), 2), ((1, 8, 8), 10), ((1, 10, 10), 3)])
def test_unet_returns_a_tensor_shaped_like_x_and_uses_both_labels(shape, classes):
    torch.manual_seed(0)
    net = UNet(shape[0], shape[1], classes, channels=(8, 16), attention=(False, True))
    for p in net.parameters():  # leave the zero-initialised output layer out of the way
        torch.nn.init.normal_(p, 0, 0.1)
    x = torch.randn(4, *shape)
    out = net(x, torch.rand(4), torch.arange(4) % classes)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, torch.rand(4), torch.arange(4) % classes))  # noise label matters
    assert not torch.allclose(out[:1], net(x[:1], torch.tensor([0.5]), None))  # null class differs


def test_noise_embedding_scale_is_a_setting_that_reaches_the_network():
    """model.noise_scale sets how fast the embedding turns with the noise label; artifacts written before the
    setting existed rebuild with the scale they were trained with (1000)."""
    from imagegen.config import GenConfig, load
    from imagegen.models.unet import FourierEmbedding
    from imagegen.train.recipes import build_networks, network_configs

    cfg = load(GenConfig, overrides=["model.noise_scale=1"], flags={"method.name": "edm"})
    assert build_networks(network_configs(cfg, (1, 8, 8), 10))["net"].noise_emb[0].scale == 1.0
    near = torch.tensor([0.10, 0.11])
    smooth, fast = FourierEmbedding(16, scale=1.0)(near), FourierEmbedding(16, scale=1000.0)(near)
    assert (smooth[0] - smooth[1]).norm() < 0.05 < (fast[0] - fast[1]).norm()
    assert UNet(1, 8, 10, channels=(8, 16), attention=(False, False)).noise_emb[0].scale == 1000.0


def test_fresh_unet_outputs_zero():
    net = UNet(1, 8, 10, channels=(8, 16), attention=(False, False))
    assert net(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, 2])).abs().max() == 0


def test_flow_velocity_read_as_denoiser_is_the_exact_gaussian_denoiser():
    """The ideal velocity of Gaussian data, E[eps - x0 | x_t], through FlowDenoiser equals the ideal denoiser."""

    def ideal_velocity(x_t, t, y=None):
        t = t.view(-1, 1, 1, 1)
        var = (1 - t) ** 2 * SD**2 + t**2
        return (t - (1 - t) * SD**2) / var * x_t

    x = torch.randn(5, 1, 4, 4) * 3
    for sigma in (0.01, 0.3, 1.0, 7.0, 80.0):
        got = diffusion.FlowDenoiser(ideal_velocity)(x, sigma)
        torch.testing.assert_close(got, gaussian_denoiser(x, sigma), rtol=1e-4, atol=1e-5)


def test_edm_preconditioning_with_a_zero_network_is_c_skip():
    d = diffusion.EDMDenoiser(lambda x, c_noise, y: torch.zeros_like(x), sigma_data=SD)
    x = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(d(x, 2.0), x * SD**2 / (SD**2 + 4.0))


@pytest.mark.parametrize("name,order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp-2m", 2)])
def test_samplers_converge_to_the_exact_gaussian_solution_at_their_order(name, order):
    """With the exact denoiser the ODE's solution is x_T * SD / sqrt(SD^2 + sigma_max^2); doubling the steps
    divides the error by about 2 (first order) or 4 (second order)."""
    x_t = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0)) * 80
    exact = x_t * SD / math.sqrt(SD**2 + 80**2)
    err = [(samplers.SAMPLERS[name](gaussian_denoiser, x_t.clone(), samplers.karras_sigmas(n)) - exact).abs().max()
           / exact.abs().max() for n in (32, 64)]
    assert err[1] < 0.05 and err[0] / err[1] > 2 ** order * 0.9


def test_second_order_samplers_beat_euler_at_equal_steps():
    x_t = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0)) * 80
    exact = x_t * SD / math.sqrt(SD**2 + 80**2)
    err = {n: (samplers.SAMPLERS[n](gaussian_denoiser, x_t.clone(), samplers.karras_sigmas(16)) - exact).abs().max()
           for n in ("euler", "heun", "dpmpp-2m")}
    assert err["heun"] < err["euler"] and err["dpmpp-2m"] < err["euler"]


def test_ddim_with_noise_is_stochastic_but_reproducible_and_callback_sees_every_step():
    sigmas = samplers.karras_sigmas(6)
    seen = []

    def noise_from(seed):
        g = torch.Generator().manual_seed(seed)
        return lambda x: torch.randn(x.shape, generator=g)

    a = samplers.ddim(gaussian_denoiser, torch.ones(2, 1, 2, 2) * 80, sigmas, noise=noise_from(1), eta=1.0,
                      callback=seen.append)
    b = samplers.ddim(gaussian_denoiser, torch.ones(2, 1, 2, 2) * 80, sigmas, noise=noise_from(1), eta=1.0)
    c = samplers.ddim(gaussian_denoiser, torch.ones(2, 1, 2, 2) * 80, sigmas, noise=noise_from(2), eta=1.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert [s["i"] for s in seen] == list(range(6)) and seen[0]["sigma"] == pytest.approx(80.0)
    with pytest.raises(ValueError, match="noise"):
        samplers.ddim(gaussian_denoiser, torch.ones(1, 1, 2, 2), sigmas, eta=0.5)


def test_schedules_start_high_end_at_zero_and_refuse_zero_steps():
    for s in (samplers.karras_sigmas(5), samplers.flow_sigmas(5)):
        assert len(s) == 6 and s[-1] == 0 and torch.all(s[:-1] > s[1:])
    assert samplers.flow_sigmas(1)[0] == pytest.approx(200.0)
    with pytest.raises(ValueError, match=">= 1"):
        samplers.karras_sigmas(0)


def label_denoiser(calls: list):
    """A denoiser that returns each example's label everywhere and records its batch sizes."""

    def d(x, sigma, y):
        calls.append(len(x))
        return x * 0 + y.view(-1, 1, 1, 1).float()

    return d


def test_guidance_combines_conditional_and_unconditional_in_one_call():
    calls = []
    d = label_denoiser(calls)
    x, y = torch.zeros(3, 1, 2, 2), torch.tensor([1, 2, 3])
    out = guided(d, 3.0, null_label=10)(x, 1.0, y)  # uncond + 3 (cond - uncond) = 10 + 3 (y - 10)
    torch.testing.assert_close(out[:, 0, 0, 0], 10 + 3 * (y.float() - 10))
    assert calls == [6]
    assert guided(d, 1.0, 10) is d


def test_guidance_interval_guides_inside_and_calls_once_outside():
    calls = []
    d = label_denoiser(calls)
    x, y = torch.zeros(3, 1, 2, 2), torch.tensor([1, 2, 3])
    g = guided(d, 3.0, null_label=10, interval=(0.5, 2.0))
    torch.testing.assert_close(g(x, 2.0, y)[:, 0, 0, 0], 10 + 3 * (y.float() - 10))  # hi is inside
    for sigma in (0.5, 2.5):  # lo is outside, and so is above hi: the conditional denoiser alone
        torch.testing.assert_close(g(x, sigma, y)[:, 0, 0, 0], y.float())
    assert calls == [6, 3, 3]
    for bad in ((2.0, 1.0), (-1.0, 1.0), (1.0,), "ab"):
        with pytest.raises(ValueError, match="guidance interval"):
            guided(d, 2.0, 10, interval=bad)


def test_label_dropout_uses_the_null_class_at_the_given_rate():
    y = torch.zeros(10_000, dtype=torch.long)
    dropped = diffusion.drop_labels(y, 0.2, null_label=10, generator=torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 10} and abs((dropped == 10).float().mean() - 0.2) < 0.02


@pytest.mark.parametrize("loss", ["flow", "edm"])
def test_diffusion_losses_are_per_image_and_fall_when_overfitting_one_batch(loss):
    torch.manual_seed(0)
    net = UNet(1, 8, 2, channels=(8, 16), attention=(False, False))
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    y = torch.arange(8) % 2
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    first = None
    for step in range(60):
        g = torch.Generator().manual_seed(step % 4)  # the same four noise draws again and again
        values = diffusion.LOSSES[loss](net, x, y, generator=g)
        assert values.shape == (8,) and torch.all(values >= 0)
        opt.zero_grad()
        values.mean().backward()
        opt.step()
        first = first if first is not None else values.mean().item()
    assert values.mean().item() < 0.6 * first


def test_gan_losses_match_their_definitions():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    torch.testing.assert_close(gan.d_loss(real, fake, "hinge"), torch.tensor([0.0 + 1.5, 2.0 + 0.0]))
    torch.testing.assert_close(gan.g_loss(fake, "hinge"), -fake)
    ns = gan.d_loss(real, fake)
    torch.testing.assert_close(ns, torch.log1p(torch.exp(-real)) + torch.log1p(torch.exp(fake)))
    with pytest.raises(ValueError, match="unknown GAN loss"):
        gan.g_loss(fake, "wasserstein")


def test_r1_penalty_of_a_linear_discriminator_is_its_weight_norm():
    w = torch.randn(1, 4, 4)
    penalty = gan.r1_penalty(lambda x, y: (x * w).sum(dim=(1, 2, 3)), torch.randn(3, 1, 4, 4), None)
    torch.testing.assert_close(penalty, torch.full((3,), w.square().sum().item()))


def test_diffaugment_translation_moves_content_and_cutout_removes_a_quarter():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0
    g = torch.Generator().manual_seed(0)
    moved = gan.diff_augment(x, "translation", g)
    assert moved.shape == x.shape and not torch.equal(moved, x) and moved.sum() <= x.sum()
    assert torch.allclose(moved.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # a shift of 2 keeps the square
    cut = gan.diff_augment(torch.ones(256, 1, 16, 16), "cutout", g)
    assert 0.70 < cut.mean() < 0.85  # a half-side square (1/4 of the area), partly outside at the borders
    colored = gan.diff_augment(x, "color,translation,cutout", g)
    assert colored.shape == x.shape
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        gan.diff_augment(x, "rotate", g)


def test_dcgan_and_vae_shapes():
    for size in (8, 16, 28, 32):
        G, D = Generator(3, size, 4, z_dim=8, width=8), Discriminator(3, size, 4, width=8)
        img = G(torch.randn(2, 8), torch.tensor([0, 3]))
        assert img.shape == (2, 3, size, size) and img.abs().max() <= 1
        assert D(img, torch.tensor([0, 3])).shape == (2,)
        v = VAE(3, size, 4, z_dim=4, width=8)
        recon, mean, logvar = v(img, torch.tensor([0, 1]), torch.randn(2, 4))
        assert recon.shape == img.shape and mean.shape == logvar.shape == (2, 4)
    with pytest.raises(ValueError, match="even image size"):
        Generator(1, 7, 10)


def used_rows(output: torch.Tensor, table: torch.nn.Embedding) -> list[int]:
    """The rows of a class table that the output's gradient reaches: the classes the network read."""
    (grad,) = torch.autograd.grad(output.square().sum(), table.weight)
    return grad.abs().sum(1).nonzero().flatten().tolist()


@pytest.mark.parametrize("conditioning", ["norm", "add"])
def test_the_gan_generator_reads_the_class_through_its_tables(conditioning):
    torch.manual_seed(0)
    G = Generator(1, 8, 5, z_dim=8, width=8, conditioning=conditioning)
    z = torch.randn(4, 8)
    a, b = G(z, torch.tensor([0, 3, 0, 3])), G(z, torch.tensor([1, 3, 1, 3]))
    assert (a - b)[[0, 2]].abs().max() > 1e-4  # another class, another image from the same latent
    tables = [G.class_emb] if conditioning == "add" else \
        [t for m in G.modules() if hasattr(m, "scale") for t in (m.scale, m.shift)]
    assert tables and all(used_rows(G(z, torch.tensor([0, 3, 0, 3])), t) == [0, 3] for t in tables)


def test_the_discriminator_and_the_vae_read_the_class_through_their_tables():
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([4, 1, 4, 1])
    D = Discriminator(1, 8, 5, width=8)
    assert (D(x, y) - D(x, torch.tensor([2, 1, 2, 1])))[[0, 2]].abs().min() > 1e-6
    assert used_rows(D(x, y), D.class_proj) == [1, 4]
    v = VAE(1, 8, 5, z_dim=4, width=8)
    for p in v.parameters():  # away from the tiny initial values, so the class's effect is not lost in rounding
        torch.nn.init.normal_(p, 0, 0.3)
    noise = torch.randn(4, 4)
    recon, mean, _ = v(x, y, noise)
    recon2, mean2, _ = v(x, torch.tensor([2, 1, 2, 1]), noise)
    assert (mean - mean2)[[0, 2]].abs().min() > 1e-4 and torch.equal(mean[[1, 3]], mean2[[1, 3]])
    assert (recon - recon2)[[0, 2]].abs().amax(dim=(1, 2, 3)).min() > 1e-4
    assert used_rows(v(x, y, noise)[0], v.class_emb) == [1, 4] and used_rows(v.decode(noise, y), v.class_z) == [1, 4]


def test_elbo_is_reconstruction_plus_beta_times_the_kl_of_the_posterior_to_the_prior():
    """The KL term against a hand-computed value (an encoder made to output known means and variances), and on a
    random encoder against a Monte Carlo estimate of E_q[log q(z) - log p(z)]."""
    torch.manual_seed(0)
    v = VAE(1, 8, 2, z_dim=4, width=8)
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 0, 1])

    def kl_per_image(beta_a=1.0, beta_b=0.0):  # the loss is per pixel: x64 for per image
        losses = [vae.elbo_loss(v, x, y, generator=torch.Generator().manual_seed(0), beta=b) for b in (beta_a, beta_b)]
        return (losses[0] - losses[1]) * 64

    with torch.no_grad():
        v.to_stats.weight.zero_()  # mean (1, 0, -1, 2), log-variance (0, log 4, 0, 0) for every image
        v.to_stats.bias.copy_(torch.tensor([1.0, 0.0, -1.0, 2.0, 0.0, math.log(4.0), 0.0, 0.0]))
    # 0.5 (mu^2 + var - 1 - log var) per dimension: 0.5 + (1.5 - log 2) + 0.5 + 2
    torch.testing.assert_close(kl_per_image(), torch.full((4,), 4.5 - math.log(2.0)), rtol=1e-4, atol=0)
    torch.testing.assert_close(kl_per_image(2.5), 2.5 * kl_per_image(), rtol=1e-4, atol=0)  # linear in beta
    recon = v.decode(torch.tensor([1.0, 0.0, -1.0, 2.0]) + torch.tensor([1.0, 2.0, 1.0, 1.0])
                     * torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), y)
    torch.testing.assert_close(vae.elbo_loss(v, x, y, generator=torch.Generator().manual_seed(0), beta=0.0) * 64,
                               (recon - x).square().sum(dim=(1, 2, 3)) / (2 * 0.1**2))  # Gaussian, sigma_x 0.1

    torch.manual_seed(1)
    v = VAE(1, 8, 2, z_dim=4, width=8)
    for p in v.encoder.parameters():
        torch.nn.init.normal_(p, 0, 0.3)
    kl = kl_per_image()
    with torch.no_grad():
        mean, logvar = v.encode(x, y)
    q, p = torch.distributions.Normal(mean, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    z = mean + (0.5 * logvar).exp() * torch.randn(40_000, *mean.shape, generator=torch.Generator().manual_seed(2))
    terms = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (samples, images)
    se = terms.std(0) / math.sqrt(len(terms))
    assert kl.min() > 0.1 and torch.all((terms.mean(0) - kl).abs() < 4 * se), (kl, terms.mean(0), se)


def test_autoguidance_adds_the_weighted_difference_to_the_guide_at_every_level():
    calls, guide_calls = [], []
    d = label_denoiser(calls)
    guide = lambda x, sigma, y: x * 0 + 0.5 * y.view(-1, 1, 1, 1).float()  # noqa: E731  a weaker "model"
    x, y = torch.zeros(3, 1, 2, 2), torch.tensor([1, 2, 3])

    def counted(x, sigma, y):
        guide_calls.append(y.tolist())
        return guide(x, sigma, y)

    g = guided(d, 1.0, null_label=10, guide=counted, weight=2.0)  # no classifier-free guidance: y + (y - y/2)
    for sigma in (0.1, 1.0, 50.0):
        torch.testing.assert_close(g(x, sigma, y)[:, 0, 0, 0], 1.5 * y.float())
    both = guided(d, 3.0, null_label=10, interval=(0.5, 2.0), guide=counted, weight=2.0)
    # inside the interval: CFG's 10 + 3 (y - 10), plus (2 - 1) (cond - guide) with the conditional labels
    torch.testing.assert_close(both(x, 1.0, y)[:, 0, 0, 0], 10 + 3 * (y.float() - 10) + 0.5 * y.float())
    torch.testing.assert_close(both(x, 5.0, y)[:, 0, 0, 0], 1.5 * y.float())  # outside: autoguidance alone
    assert guide_calls == [[1, 2, 3]] * 5  # the guide sees the class labels, never the null label
    assert guided(d, 1.0, 10, guide=counted, weight=1.0) is d
    with pytest.raises(ValueError, match="guide"):
        guided(d, 1.0, 10, weight=2.0)


def test_autoguidance_applies_only_inside_its_interval():
    calls, guide_calls = [], []
    d = label_denoiser(calls)

    def guide(x, sigma, y):
        guide_calls.append(float(sigma))
        return x * 0 + 0.5 * y.view(-1, 1, 1, 1).float()

    x, y = torch.zeros(2, 1, 2, 2), torch.tensor([4, 6])
    g = guided(d, 1.0, null_label=10, guide=guide, weight=3.0, guide_interval=(0.0, 10.0))
    torch.testing.assert_close(g(x, 200.0, y)[:, 0, 0, 0], y.float())  # above 10: the conditional denoiser alone
    torch.testing.assert_close(g(x, 10.0, y)[:, 0, 0, 0], 2.0 * y.float())  # lo < sigma <= hi: y + 2 (y - y/2)
    torch.testing.assert_close(g(x, 0.1, y)[:, 0, 0, 0], 2.0 * y.float())
    assert guide_calls == [10.0, 0.1]  # the guide is not called outside its interval
    with pytest.raises(ValueError, match="0 <= lo < hi"):
        guided(d, 1.0, 10, guide=guide, weight=3.0, guide_interval=(5.0, 1.0))
