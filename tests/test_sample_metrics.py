"""The sample-quality scores (mamba_bio_audio.sample_metrics) on small arrays, against values
worked out by hand or in closed form."""

import math

import numpy as np
import pytest
import torch

from mamba_bio_audio.sample_metrics import (am_score, fid, frechet_distance, inception_score,
                                            modified_inception_score, psd_sqrt, sample_scores)


def test_psd_sqrt_squares_back_and_is_symmetric():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    m = x @ x.T  # rank 4 of 6: two zero eigenvalues
    root = psd_sqrt(m)
    assert torch.allclose(root, root.T, atol=1e-12)
    assert torch.allclose(root @ root, m, atol=1e-10)
    assert torch.linalg.eigvalsh(root).min() > -1e-7
    assert torch.allclose(psd_sqrt(torch.diag(torch.tensor([4.0, 9.0, 0.0]))),
                          torch.diag(torch.tensor([2.0, 3.0, 0.0], dtype=torch.float64)))


def test_fid_of_identical_features_is_zero():
    f = np.random.default_rng(0).normal(size=(50, 8))
    assert fid(f, f) == pytest.approx(0.0, abs=1e-9)
    assert fid(torch.tensor(f, dtype=torch.float32), f) == pytest.approx(0.0, abs=1e-5)


def test_fid_of_a_shifted_copy_is_the_squared_shift():
    f = np.random.default_rng(1).normal(size=(40, 3))
    shift = np.array([1.0, -2.0, 0.5])
    assert fid(f, f + shift) == pytest.approx(1 + 4 + 0.25, rel=1e-9)


def test_frechet_distance_against_closed_forms():
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = 5 + 1 + 1
    assert frechet_distance([0, 0], np.diag([1.0, 4.0]), [1, 2], np.diag([4.0, 9.0])) == \
        pytest.approx(7.0, rel=1e-12)
    # covariances that do not commute: for 2x2 PSD A, B, tr (AB)^1/2 = sqrt(tr AB + 2 sqrt(det A
    # det B)); here tr AB = 8, det A = det B = 3, so FID = 4 + 4 - 2 sqrt(14)
    a, b = np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 3.0]])
    assert frechet_distance([0, 0], a, [0, 0], b) == pytest.approx(8 - 2 * math.sqrt(14), rel=1e-12)
    assert frechet_distance([0, 0], b, [0, 0], a) == pytest.approx(8 - 2 * math.sqrt(14), rel=1e-12)


def test_fid_of_samples_approaches_the_gaussians_distance():
    rng = np.random.default_rng(2)
    a, b = np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 3.0]])
    xa = rng.multivariate_normal([0, 0], a, size=200_000)
    xb = rng.multivariate_normal([1, 0], b, size=200_000)
    assert fid(xa, xb) == pytest.approx(1 + 8 - 2 * math.sqrt(14), abs=0.03)


def test_inception_score_bounds_and_a_worked_case():
    k = 4
    assert inception_score(np.full((10, k), 1 / k)) == pytest.approx(1.0)
    assert inception_score(np.eye(k)[[0, 1, 2, 3] * 5]) == pytest.approx(k)  # confident, balanced
    assert inception_score(np.eye(k)[[2] * 8]) == pytest.approx(1.0)  # confident, one class
    # p1 = [1, 0], p2 = [.5, .5]: p(y) = [.75, .25]
    kl1 = math.log(1 / 0.75)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert inception_score([[1, 0], [0.5, 0.5]]) == pytest.approx(math.exp((kl1 + kl2) / 2))


def test_modified_inception_score_worked_cases():
    assert modified_inception_score(np.full((5, 3), 1 / 3)) == pytest.approx(1.0)
    p1, p2 = [0.5, 0.5], [0.9, 0.1]
    kl12 = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl21 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    # four ordered pairs (1,1), (1,2), (2,1), (2,2); a sample against itself adds 0
    assert modified_inception_score([p1, p2]) == pytest.approx(math.exp((kl12 + kl21) / 4))
    confident = modified_inception_score(np.eye(3)[[0, 1, 2]])
    assert confident > 1e5  # KL between different one-hot predictions: log(1 / LOG_FLOOR)


def test_am_score_worked_cases():
    ref = np.eye(2)  # the reference clips' classes are balanced
    assert am_score(np.eye(2)[[0, 1, 0, 1]], ref) == pytest.approx(0.0, abs=1e-12)
    assert am_score(np.full((3, 2), 0.5), ref) == pytest.approx(math.log(2))
    # p(y) = [.75, .25]: KL([.5, .5] || p(y)) + mean entropy (log 2 + 0) / 2
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert am_score([[0.5, 0.5], [1, 0]], ref) == pytest.approx(kl + math.log(2) / 2)
    with pytest.raises(ValueError, match="classes"):
        am_score(np.full((2, 3), 1 / 3), ref)


def test_sample_scores_of_the_reference_itself():
    rng = np.random.default_rng(3)
    feats, probs = rng.normal(size=(30, 5)), np.eye(3)[rng.integers(0, 3, 30)]
    s = sample_scores(feats, probs, feats, probs)
    assert s["fid"] == pytest.approx(0.0, abs=1e-9) and s["am"] == pytest.approx(0.0, abs=1e-12)
    assert s["is"] == pytest.approx(inception_score(probs)) and s["mis"] > 1


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="n >= 2"):
        fid(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="expected shape"):
        inception_score(np.zeros(3))
