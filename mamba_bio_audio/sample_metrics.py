"""Quality scores of generated samples from a classifier's outputs (SC09-style, as in SaShiMi and
Mamba): Fréchet distance of its features, Inception score, modified Inception score, AM score.

Every function takes plain arrays (NumPy or torch, any float dtype) and computes in float64:

- `fid(features_a, features_b)`: the Fréchet distance between Gaussians fitted to two sets of
  feature vectors (n, d) (Heusel et al. 2017): |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2).
  Lower is better; 0 for identical sets.
- `inception_score(probs)`: exp(E_x KL(p(y|x) || p(y))) over class probabilities (n, k)
  (Salimans et al. 2016); from 1 (every prediction the same) to k (confident and balanced).
- `modified_inception_score(probs)`: exp(E_{x, x'} KL(p(y|x) || p(y|x'))) over all ordered pairs
  of samples, a pair of one sample with itself included (Gurumurthy et al. 2017); higher when
  the predictions are confident and differ from sample to sample.
- `am_score(probs, reference_probs)`: KL(p_ref(y) || p(y)) + E_x H(p(y|x)) (Zhou et al. 2018),
  where p_ref(y) is the mean prediction on real clips; lower is better, 0 for confident
  predictions whose class frequencies match the reference's.

The matrix square root is the standard one for symmetric positive semi-definite matrices (an
eigendecomposition, `psd_sqrt`): tr (S_a S_b)^1/2 = tr (S_a^1/2 S_b S_a^1/2)^1/2, and the matrix
inside is symmetric PSD, so only symmetric eigendecompositions are needed.
"""

from __future__ import annotations

import torch

LOG_FLOOR = 1e-12  # probabilities are clamped here inside a logarithm: log 0 would make KL inf


def _float64(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().to("cpu", torch.float64)


def psd_sqrt(matrix) -> torch.Tensor:
    """The symmetric PSD square root of a symmetric PSD matrix (d, d): V diag(sqrt(w)) V^T from
    its eigendecomposition; eigenvalues below 0 (rounding) count as 0."""
    m = _float64(matrix)
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def gaussian_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and covariance (d, d) of feature vectors (n, d), n >= 2 (unbiased, as np.cov)."""
    f = _float64(features)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"features: expected shape (n, d) with n >= 2, got {tuple(f.shape)}")
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet (2-Wasserstein) distance squared between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    mu_a, mu_b, cov_a, cov_b = map(_float64, (mu_a, mu_b, cov_a, cov_b))
    root_a = psd_sqrt(cov_a)
    inner = root_a @ cov_b @ root_a  # similar to cov_a @ cov_b, and symmetric PSD
    trace_root = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root
    return max(float(value), 0.0)  # rounding can leave -1e-15 for identical sets


def fid(features_a, features_b) -> float:
    """Fréchet distance between the Gaussians fitted to two sets of features (n_a, d), (n_b, d)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def _probabilities(probs) -> torch.Tensor:
    p = _float64(probs)
    if p.dim() != 2 or p.shape[0] < 1:
        raise ValueError(f"probs: expected shape (n, classes), got {tuple(p.shape)}")
    return p


def kl_divergence(p, q) -> torch.Tensor:
    """KL(p || q) along the last axis (nats), 0 log 0 = 0; q is clamped at LOG_FLOOR."""
    p, q = _float64(p), _float64(q)
    return (torch.xlogy(p, p) - p * q.clamp_min(LOG_FLOOR).log()).sum(-1)


def inception_score(probs) -> float:
    """exp(mean_i KL(p_i || mean_j p_j)) of class probabilities (n, k)."""
    p = _probabilities(probs)
    return float(kl_divergence(p, p.mean(0, keepdim=True)).mean().exp())


def modified_inception_score(probs) -> float:
    """exp(mean over all n^2 ordered pairs (i, j) of KL(p_i || p_j)) of probabilities (n, k)."""
    p = _probabilities(probs)
    neg_entropy = torch.xlogy(p, p).sum(-1)  # (n,)
    cross = p @ p.clamp_min(LOG_FLOOR).log().T  # (n, n): sum_k p_ik log p_jk
    return float((neg_entropy[:, None] - cross).mean().exp())


def am_score(probs, reference_probs) -> float:
    """KL(mean reference prediction || mean prediction) + the mean entropy of the predictions."""
    p, ref = _probabilities(probs), _probabilities(reference_probs)
    if p.shape[1] != ref.shape[1]:
        raise ValueError(f"probs have {p.shape[1]} classes, reference_probs {ref.shape[1]}")
    entropy = -torch.xlogy(p, p).sum(-1).mean()
    return float(kl_divergence(ref.mean(0), p.mean(0)) + entropy)


def sample_scores(features, probs, reference_features, reference_probs) -> dict:
    """{"fid", "is", "mis", "am"} of one set of samples against the reference (real) set."""
    return {"fid": fid(features, reference_features), "is": inception_score(probs),
            "mis": modified_inception_score(probs), "am": am_score(probs, reference_probs)}
