"""Sample-quality metrics as pure functions of features or class probabilities (numpy / torch in, floats out)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

IMAG_ATOL = 1e-3  # pytorch-fid's tolerance on the imaginary part of sqrtm's diagonal


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, in float64."""
    f = np.asarray(features, np.float64)
    if len(f) < 2:
        raise ValueError("need at least 2 feature vectors for a covariance")
    return f.mean(0), np.cov(f, rowvar=False)


def fid(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between two Gaussians (Heusel et al. 2017): |mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).
    A square root with a non-negligible imaginary part (the product has negative eigenvalues: the covariances
    are not both positive semi-definite, or are badly conditioned) gets a warning before it is dropped."""
    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as caught:  # singular at small n: regularise, as pytorch-fid does
        warnings.simplefilter("always")
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if caught or not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean) and not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
        warnings.warn(f"FID: the matrix square root has an imaginary part up to {np.abs(covmean.imag).max():.3g} "
                      f"(pytorch-fid refuses more than {IMAG_ATOL:g} on the diagonal); it is dropped, so this FID "
                      "may be wrong (too few, constant or non-finite features?)", stacklevel=2)
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return fid(*mean_cov(f1), *mean_cov(f2))


def kid(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3, averaged over random subsets; returns (mean, standard deviation)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m = min(len(f1), len(f2), subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    d, rng = f1.shape[1], np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(off - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, *, n: int | None = None,
                     seed: int = 0) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the share of fake samples inside the union of
    real k-NN balls, and the share of real samples inside the union of fake k-NN balls.

    A k-NN ball shrinks as its side grows, so unequal sides bias precision down and recall up: with `n`, each
    side is first cut to n points by a fixed random choice from `seed` (what `evaluate` does); without, the
    points are used as given."""
    if n is not None:
        if not 0 < n <= min(len(real), len(fake)):
            raise ValueError(f"precision/recall at n={n} needs at least n points on each side, got {len(real)} "
                             f"real and {len(fake)} fake")
        real, fake = subsample(real, n, seed), subsample(fake, n, seed + 1)
    real_t, fake_t = torch.as_tensor(np.asarray(real, np.float32)), torch.as_tensor(np.asarray(fake, np.float32))
    return _coverage(real_t, fake_t, k), _coverage(fake_t, real_t, k)


def subsample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n rows of x chosen without replacement by `seed`, in their original order; x itself when it has n."""
    if len(x) == n:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]


def _coverage(manifold: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 2048) -> float:
    """Fraction of `queries` within the k-th-neighbour radius of at least one point of `manifold`."""
    if len(manifold) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples on each side")
    radii = torch.cat([torch.cdist(manifold[i : i + chunk], manifold).kthvalue(k + 1, dim=1).values
                       for i in range(0, len(manifold), chunk)])  # k+1: each point is its own nearest neighbour
    inside = [(torch.cdist(queries[i : i + chunk], manifold) <= radii).any(1) for i in range(0, len(queries), chunk)]
    return torch.cat(inside).float().mean().item()


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over `splits` parts (Salimans et al. 2016), with our evaluator's classes."""
    p = np.asarray(probs, np.float64)
    scores = []
    for part in np.array_split(p, min(splits, len(p))):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def class_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples that the evaluator assigns to the class they were generated for."""
    return float((np.asarray(probs).argmax(1) == np.asarray(labels)).mean())


def nearest(queries: np.ndarray, keys: np.ndarray, chunk: int = 1024, k: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance and index of each query's nearest key, (N,) each, computed in chunks to bound memory;
    with `k`, the k nearest, nearest first, (N, k) each."""
    q, keys_t = torch.as_tensor(np.asarray(queries, np.float32)), torch.as_tensor(np.asarray(keys, np.float32))
    dist, idx = [], []
    for i in range(0, len(q), chunk):
        d = torch.cdist(q[i : i + chunk], keys_t)
        v, j = d.topk(k or 1, dim=1, largest=False)
        dist.append(v if k else v[:, 0])
        idx.append(j if k else j[:, 0])
    return torch.cat(dist).numpy(), torch.cat(idx).numpy()
