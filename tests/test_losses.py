"""Loss modules: values against hand computations, per-image reduction, invariances, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.models.losses import ContentLoss, GramStyleLoss, IdentityLoss, MeanStdStyleLoss, TVLoss
from pipeline.models.vgg import gram, mean_std


def feats(b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"relu1_1": torch.rand(b, 4, 8, 8, generator=g), "relu2_1": torch.rand(b, 6, 4, 4, generator=g)}


def test_content_loss_is_layer_mean_of_mse():
    x, t = feats(seed=0), feats(seed=1)
    loss = ContentLoss(["relu1_1", "relu2_1"], t)
    expected = (F.mse_loss(x["relu1_1"], t["relu1_1"]) + F.mse_loss(x["relu2_1"], t["relu2_1"])) / 2
    torch.testing.assert_close(loss(x), expected)
    assert loss(t).item() == 0.0
    # a target per call (training) instead of a fixed one (gatys)
    torch.testing.assert_close(ContentLoss(["relu1_1", "relu2_1"])(x, t), expected)


def test_per_image_reduction_keeps_images_apart():
    t = feats(seed=1)
    x = {k: torch.stack([t[k][0], v[1]]) for k, v in feats(seed=0).items()}  # image 0 equals its target
    per_image = ContentLoss(["relu1_1"], t, reduction="none")(x)
    assert per_image.shape == (2,)
    assert per_image[0].item() == 0.0 and per_image[1].item() > 0


def test_mapping_weights_are_used_as_given():
    x, t = feats(seed=0), feats(seed=1)
    a = ContentLoss({"relu1_1": 1.0})(x, t)
    b = ContentLoss({"relu2_1": 1.0})(x, t)
    torch.testing.assert_close(ContentLoss({"relu1_1": 1.0, "relu2_1": 3.0})(x, t), a + 3 * b)


def test_gram_loss_matches_hand_computation_and_broadcasts_target():
    x, s = feats(b=2, seed=0), feats(b=1, seed=1)
    targets = GramStyleLoss.grams(s)
    assert targets["relu1_1"].shape == (1, 4, 4)
    loss = GramStyleLoss(["relu1_1", "relu2_1"], targets, reduction="none")
    per_image = loss(x)
    for i in range(2):
        expected = sum(F.mse_loss(gram(x[k][i : i + 1]), targets[k]) for k in targets) / 2
        torch.testing.assert_close(per_image[i], expected)


def test_gram_loss_ignores_where_things_are():
    """Style is position-free: shuffling feature positions leaves the Gram loss unchanged."""
    x, s = feats(seed=0), feats(b=1, seed=1)
    loss = GramStyleLoss(["relu1_1", "relu2_1"], GramStyleLoss.grams(s))
    shuffled = {}
    for k, v in x.items():
        flat = v.flatten(2)
        perm = torch.randperm(flat.shape[-1], generator=torch.Generator().manual_seed(3))
        shuffled[k] = flat[..., perm].view_as(v)
    torch.testing.assert_close(loss(shuffled), loss(x))
    assert loss(s).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(x).item() > 0


def test_mean_std_loss():
    x, s = feats(seed=0), feats(seed=1)
    loss = MeanStdStyleLoss({"relu1_1": 1.0, "relu2_1": 1.0})  # AdaIN's plain sum over layers
    expected = 0.0
    for k in x:
        (xm, xs), (sm, ss) = mean_std(x[k]), mean_std(s[k])
        expected = expected + F.mse_loss(xm, sm) + F.mse_loss(xs, ss)
    torch.testing.assert_close(loss(x, s), expected)
    # same channel statistics, different arrangement -> no loss
    flipped = {k: v.flip(-1).flip(-2) for k, v in s.items()}
    assert loss(flipped, s).item() == pytest.approx(0.0, abs=1e-10)
    assert loss({k: 2 * v for k, v in s.items()}, s).item() > 0.01


def test_tv_loss():
    assert TVLoss()(torch.full((2, 3, 8, 8), 0.3)).item() == 0.0
    ramp = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 3, 4, 5)  # steps of 1 along width only
    torch.testing.assert_close(TVLoss()(ramp), torch.tensor(1.0))
    noisy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    smooth = F.avg_pool2d(noisy, 3, 1, 1)
    assert TVLoss()(smooth) < TVLoss()(noisy)
    assert TVLoss(reduction="none")(torch.rand(3, 3, 1, 7)).shape == (3,)  # one row: only horizontal terms
    assert TVLoss()(torch.rand(1, 3, 1, 1)).item() == 0.0


def test_identity_loss():
    content = torch.rand(2, 3, 8, 8)
    fc = feats(seed=0)
    ident = IdentityLoss(pixel_weight=1.0, feature_weight=50.0)
    assert ident(content, content, fc, fc).item() == 0.0
    out = content + 0.1
    f_out = {k: v + 0.2 for k, v in fc.items()}
    # 1 * 0.1^2 + 50 * (0.2^2 + 0.2^2)
    torch.testing.assert_close(ident(out, content, f_out, fc), torch.tensor(0.01 + 50 * 0.08))
    torch.testing.assert_close(IdentityLoss(feature_weight=0.0)(out, content, f_out, fc), torch.tensor(0.01))


def test_losses_are_differentiable():
    x = {k: v.requires_grad_(True) for k, v in feats(seed=0).items()}
    s = feats(b=1, seed=1)
    total = GramStyleLoss(["relu1_1", "relu2_1"], GramStyleLoss.grams(s))(x) + ContentLoss(["relu2_1"])(x, s)
    total.backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in x.values())


def test_errors():
    with pytest.raises(ConfigError, match="at least one layer"):
        ContentLoss([])
    with pytest.raises(ConfigError, match="relu3_1"):
        ContentLoss(["relu3_1"])(feats(), feats())
    with pytest.raises(ConfigError, match="relu4_1"):
        GramStyleLoss(["relu4_1"])(feats(), GramStyleLoss.grams(feats()))
    with pytest.raises(ConfigError, match="no target"):
        ContentLoss(["relu1_1"])(feats())
