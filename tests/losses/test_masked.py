"""data2vec targets and loss (jem.losses.masked) and patch masking (jem.augment.masking) against
loops and closed forms."""

import math

import pytest
import torch

from jem.losses.masked import Data2VecLoss, data2vec_targets, regression_loss
from jem.models.masking import drop_tokens, num_masked, random_token_mask, replace_tokens


def _layers(n_layers=4, b=2, t=5, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, d, generator=g, dtype=torch.float64) * (i + 1) + i for i in range(n_layers)]


def test_targets_are_the_mean_of_layer_normalised_top_k_layers():
    layers = _layers()
    y = data2vec_targets(layers, top_k=3)
    ref = torch.zeros_like(layers[0])
    for b in range(2):
        for t in range(5):
            for layer in layers[-3:]:
                a = layer[b, t]
                ref[b, t] += (a - a.mean()) / torch.sqrt(a.var(unbiased=False) + 1e-5) / 3
    torch.testing.assert_close(y, ref)
    z = data2vec_targets(layers, top_k=3, norm_average=True)
    torch.testing.assert_close(z.mean(-1), torch.zeros(2, 5, dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="top_k"):
        data2vec_targets(layers, top_k=5)


def test_instance_normalised_targets_normalise_each_channel_over_the_tokens():
    layers = _layers()
    y = data2vec_targets(layers, top_k=2, norm_each="instance")
    ref = torch.zeros_like(layers[0])
    for b in range(2):
        for d in range(6):
            for layer in layers[-2:]:
                a = layer[b, :, d]  # one channel over the 5 tokens
                ref[b, :, d] += (a - a.mean()) / torch.sqrt(a.var(unbiased=False) + 1e-5) / 2
    torch.testing.assert_close(y, ref)
    # a token-independent block output (the collapse data2vec must avoid) gives an all-zero target
    const = [layers[0][:, :1].expand(-1, 5, -1).clone()]
    assert float(data2vec_targets(const, top_k=1, norm_each="instance").abs().max()) < 1e-9


def test_regression_loss_is_smooth_l1_summed_over_channels_and_scaled():
    g = torch.Generator().manual_seed(0)
    pred = (3 * torch.randn(7, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    target = torch.randn(7, 4, generator=g, dtype=torch.float64)
    beta = 2.0
    loss = regression_loss(pred, target, beta)
    ref = 0.0
    for m in range(7):
        for c in range(4):
            e = abs(float(target[m, c] - pred[m, c].detach()))
            ref += 0.5 * e * e / beta if e <= beta else e - 0.5 * beta
    assert abs(float(loss.detach()) - ref / 7 / math.sqrt(4)) < 1e-12
    mse = regression_loss(pred, target, beta=0.0, scale=1.0)
    torch.testing.assert_close(mse, ((pred - target) ** 2).sum(1).mean())


def test_loss_only_looks_at_masked_tokens():
    layers = _layers()
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 3] = True
    pred = torch.randn(2, 6, dtype=torch.float64)
    loss = Data2VecLoss(top_k=2)(pred, layers, mask)["loss"]
    changed = [layer.clone() for layer in layers]
    for layer in changed:
        layer[0, 0] += 100.0  # an unmasked token
    assert float(Data2VecLoss(top_k=2)(pred, changed, mask)["loss"]) == float(loss)
    y = data2vec_targets(layers, 2)
    torch.testing.assert_close(loss, regression_loss(pred, torch.stack([y[0, 1], y[1, 3]])))


def test_masking_ratio_is_exact_and_token_ops_keep_order():
    for t, ratio in [(16, 0.6), (49, 0.75), (64, 0.5), (16, 0.0)]:
        mask = random_token_mask(10, t, ratio, torch.Generator().manual_seed(t))
        assert mask.shape == (10, t)
        assert (mask.sum(1) == round(ratio * t)).all()
    assert num_masked(16, 0.99) == 15  # at least one token stays visible
    with pytest.raises(ValueError):
        num_masked(16, 1.0)
    tokens = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    assert drop_tokens(tokens, mask).squeeze(-1).tolist() == [[1, 3], [4, 5]]
    replaced = replace_tokens(tokens, mask, torch.tensor([-1.0]))
    assert replaced.squeeze(-1).tolist() == [[-1, 1, -1, 3], [4, 5, -1, -1]]
