"""Collapse diagnostics against closed forms: RankMe (arXiv:2210.02885), alignment/uniformity
(arXiv:2005.10242) and the SimSiam std monitor (arXiv:2011.10566)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from jem.evaluate.collapse import alignment, collapse_report, embedding_std, rankme, uniformity


def orthonormal(rng, n, r):
    q, _ = np.linalg.qr(rng.normal(size=(n, r)))
    return q  # (n, r), orthonormal columns


@pytest.mark.parametrize("r", [1, 5, 16, 64])
def test_rankme_equal_singular_values_is_r(r):
    rng = np.random.default_rng(r)
    n, d, eps = 300, 64, 1e-7
    z = 3.7 * orthonormal(rng, n, r) @ orthonormal(rng, d, r).T  # r singular values, all 3.7
    # closed form with eps: r entries 1/r + eps, min(n, d) - r entries eps
    p = np.array([1 / r + eps] * r + [eps] * (d - r))
    assert rankme(z, eps) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert rankme(z, eps) == pytest.approx(r, rel=1e-3)
    assert rankme(z, eps=0.0) == pytest.approx(r, rel=1e-9)


def test_rankme_of_low_rank_products_is_bounded_by_rank():
    rng = np.random.default_rng(0)
    for r in (2, 8, 20):
        z = rng.normal(size=(500, r)) @ rng.normal(size=(r, 64))  # rank r, unequal singular values
        value = rankme(z, eps=0.0)
        assert r / 2 < value <= r + 1e-9, (r, value)
    full = rankme(rng.normal(size=(5000, 32)))  # isotropic: all singular values nearly equal
    assert 0.95 * 32 < full <= 32


def test_rankme_accepts_torch_and_numpy_alike():
    z = np.random.default_rng(1).normal(size=(50, 10)).astype(np.float32)
    assert rankme(torch.from_numpy(z)) == pytest.approx(rankme(z), rel=1e-12)


def test_embedding_std_collapsed_and_isotropic():
    assert embedding_std(np.tile([[1.0, -2.0, 0.5]], (100, 1))) == pytest.approx(0.0, abs=1e-12)
    d = 64
    z = np.random.default_rng(0).normal(size=(20000, d)) * 5.0  # scale is irrelevant
    assert embedding_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.02)


@pytest.mark.parametrize("alpha", [1, 2, 3])
def test_alignment_closed_forms(alpha):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 8))
    assert alignment(z, 2.5 * z, alpha) == pytest.approx(0.0, abs=1e-12)  # same direction
    assert alignment(z, -z, alpha) == pytest.approx(2.0**alpha, rel=1e-12)  # antipodal
    e = np.eye(2)
    assert alignment(e, e[::-1], alpha) == pytest.approx(math.sqrt(2) ** alpha, rel=1e-12)  # orthogonal


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_uniformity_hand_sets(t):
    assert uniformity(np.array([[1.0, 0.0], [-3.0, 0.0]]), t) == pytest.approx(-4 * t, rel=1e-12)
    tri = np.array([[math.cos(a), math.sin(a)] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
    assert uniformity(tri, t) == pytest.approx(-3 * t, rel=1e-12)  # all chords^2 = 3
    assert uniformity(np.ones((5, 3)), t) == pytest.approx(0.0, abs=1e-12)  # collapse: log 1


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_uniformity_on_the_circle_matches_numerical_integral(t):
    # Continuum value: E exp(-t |x - y|^2) with |x - y|^2 = 2 - 2 cos(theta), theta ~ U[0, 2 pi).
    density = lambda th: math.exp(-t * (2 - 2 * math.cos(th))) / (2 * math.pi)  # noqa: E731
    value, _ = integrate.quad(density, 0, 2 * math.pi)
    assert value == pytest.approx(math.exp(-2 * t) * special.i0(2 * t), rel=1e-10)  # Bessel form
    n = 1500
    angles = 2 * math.pi * np.arange(n) / n
    z = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # n equally spaced points sample the integral exactly (for this n); distinct pairs drop the
    # n self-pairs of value 1 from the n^2 ordered pairs
    distinct = (n * value - 1) / (n - 1)
    assert uniformity(z, t, chunk=97) == pytest.approx(math.log(distinct), abs=1e-9)
    assert uniformity(z, t) == pytest.approx(math.log(value), abs=5e-3)


def test_collapse_report_flags_collapse_and_passes_random():
    rng = np.random.default_rng(0)
    healthy = collapse_report(rng.normal(size=(500, 32)), z_pair=rng.normal(size=(500, 32)))
    assert not healthy["collapsed"]
    assert healthy["std_healthy"] == pytest.approx(1 / math.sqrt(32))
    assert healthy["std"] == pytest.approx(healthy["std_healthy"], rel=0.05)
    assert 0.8 < healthy["rankme_ratio"] <= 1.0
    assert healthy["alignment"] == pytest.approx(2.0, rel=0.05)  # independent pairs: E|x-y|^2 = 2
    keys = {"std", "std_healthy", "rankme", "rankme_ratio", "uniformity", "alignment", "collapsed"}
    assert set(healthy) == keys

    point = np.tile(rng.normal(size=(1, 32)), (500, 1))  # every input -> the same embedding
    constant = collapse_report(point + 1e-9 * rng.normal(size=(500, 32)))
    assert constant["collapsed"] and constant["std"] < 1e-8
    assert "alignment" not in constant

    # dimensional collapse: embeddings spread along one direction only (+/- b), so the std alone
    # looks fine but the effective rank is 1 out of 128
    b = rng.normal(size=(1, 128))
    line = rng.choice([-1.0, 1.0], size=(500, 1)) * rng.uniform(0.5, 2.0, size=(500, 1)) * b
    dim = collapse_report(line)
    assert dim["std"] > 0.2 / math.sqrt(128) and dim["rankme_ratio"] < 0.02 and dim["collapsed"]


def test_collapse_report_subsamples_uniformity_deterministically():
    z = np.random.default_rng(0).normal(size=(300, 4))
    a, b = collapse_report(z, max_points=100), collapse_report(z, max_points=100)
    assert a == b
    assert a["uniformity"] != pytest.approx(uniformity(z), abs=1e-12)  # really a subset
    assert a["uniformity"] == pytest.approx(uniformity(z), abs=0.1)
