"""Reference networks for the feed-forward stylizer tests, written as the original repositories write them.

``reference_vgg`` / ``reference_decoder``: naoto0804/pytorch-AdaIN ``net.py`` (also GlebSBrykin/SANET
``Eval.py``); ``RefSANet`` / ``RefTransform``: GlebSBrykin/SANET ``Eval.py``; ``ref_calc_mean_std`` /
``ref_adain``: pytorch-AdaIN ``function.py``. Weights are random (kaiming, so activations keep their
scale through 16 layers) with the last conv calibrated so outputs land mostly inside the clamp range
and parity checks compare real values, not clamped constants.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def reference_decoder() -> nn.Sequential:
    return nn.Sequential(
        nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(512, 256, (3, 3)),
        nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(256, 256, (3, 3)),
        nn.ReLU(),
        nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(256, 256, (3, 3)),
        nn.ReLU(),
        nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(256, 256, (3, 3)),
        nn.ReLU(),
        nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(256, 128, (3, 3)),
        nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(128, 128, (3, 3)),
        nn.ReLU(),
        nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(128, 64, (3, 3)),
        nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(64, 64, (3, 3)),
        nn.ReLU(),
        nn.ReflectionPad2d((1, 1, 1, 1)),
        nn.Conv2d(64, 3, (3, 3)),
    )


def reference_vgg() -> nn.Sequential:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(c_in, c_out, (3, 3)), nn.ReLU()]

    def pool() -> nn.Module:
        return nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)

    layers: list[nn.Module] = [nn.Conv2d(3, 3, (1, 1))]
    layers += block(3, 64) + block(64, 64) + [pool()]  # relu1_1 at index 3
    layers += block(64, 128) + block(128, 128) + [pool()]  # relu2_1 at 10
    layers += block(128, 256) + block(256, 256) + block(256, 256) + block(256, 256) + [pool()]  # relu3_1 at 17
    layers += block(256, 512) + block(512, 512) + block(512, 512) + block(512, 512) + [pool()]  # relu4_1 at 30
    layers += block(512, 512) + block(512, 512) + block(512, 512) + block(512, 512)  # relu5_1 at 43
    return nn.Sequential(*layers)


def ref_calc_mean_std(feat: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    n, c = feat.shape[:2]
    feat_var = feat.view(n, c, -1).var(dim=2) + eps
    return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), feat_var.sqrt().view(n, c, 1, 1)


def ref_adain(content_feat: Tensor, style_feat: Tensor) -> Tensor:
    size = content_feat.size()
    style_mean, style_std = ref_calc_mean_std(style_feat)
    content_mean, content_std = ref_calc_mean_std(content_feat)
    normalized = (content_feat - content_mean.expand(size)) / content_std.expand(size)
    return normalized * style_std.expand(size) + style_mean.expand(size)


def ref_mean_variance_norm(feat: Tensor) -> Tensor:
    mean, std = ref_calc_mean_std(feat)
    return (feat - mean.expand(feat.size())) / std.expand(feat.size())


class RefSANet(nn.Module):
    def __init__(self, in_planes: int) -> None:
        super().__init__()
        self.f = nn.Conv2d(in_planes, in_planes, (1, 1))
        self.g = nn.Conv2d(in_planes, in_planes, (1, 1))
        self.h = nn.Conv2d(in_planes, in_planes, (1, 1))
        self.sm = nn.Softmax(dim=-1)
        self.out_conv = nn.Conv2d(in_planes, in_planes, (1, 1))

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        f = self.f(ref_mean_variance_norm(content))
        g = self.g(ref_mean_variance_norm(style))
        h_ = self.h(style)
        b, c, h, w = f.size()
        f = f.view(b, -1, w * h).permute(0, 2, 1)
        b, c, h, w = g.size()
        g = g.view(b, -1, w * h)
        s = self.sm(torch.bmm(f, g))
        b, c, h, w = h_.size()
        h_ = h_.view(b, -1, w * h)
        o = torch.bmm(h_, s.permute(0, 2, 1))
        b, c, h, w = content.size()
        o = self.out_conv(o.view(b, c, h, w))
        o += content
        return o


class RefTransform(nn.Module):
    def __init__(self, in_planes: int) -> None:
        super().__init__()
        self.sanet4_1 = RefSANet(in_planes=in_planes)
        self.sanet5_1 = RefSANet(in_planes=in_planes)
        self.upsample5_1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.merge_conv_pad = nn.ReflectionPad2d((1, 1, 1, 1))
        self.merge_conv = nn.Conv2d(in_planes, in_planes, (3, 3))

    def forward(self, content4_1: Tensor, style4_1: Tensor, content5_1: Tensor, style5_1: Tensor) -> Tensor:
        merged = self.sanet4_1(content4_1, style4_1) + self.upsample5_1(self.sanet5_1(content5_1, style5_1))
        return self.merge_conv(self.merge_conv_pad(merged))


def kaiming_(module: nn.Module, seed: int) -> nn.Module:
    """Variance-preserving random weights for every conv (PyTorch's default init shrinks deep activations)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
            elif isinstance(m, nn.InstanceNorm2d) and m.affine:
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return module


def calibrate_last_conv(net: nn.Module, x: Tensor, *, mean: float, std: float, forward=None) -> None:
    """Rescale the last conv of ``net`` so ``forward(x)`` has roughly the given mean and std."""
    last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        y = (forward or net)(x)
        k = std / y.std().item()
        last.weight.mul_(k)
        last.bias.mul_(k).add_(mean - k * y.mean().item())


def smooth_image(seed: int, h: int, w: int, batch: int = 1) -> Tensor:
    """A photo-like [0,1] image: smooth random colour fields plus some edges."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, 4, 5, generator=gen)
    img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    edges = (torch.rand(batch, 1, 6, 7, generator=gen) > 0.5).float()
    img = 0.75 * img + 0.25 * F.interpolate(edges, size=(h, w), mode="nearest")
    return img.clamp(0, 1)


def red_smooth_style(h: int, w: int) -> Tensor:
    """Warm, smooth style image."""
    yy = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    return torch.stack([0.8 + 0.2 * yy, 0.3 * yy, 0.1 + 0.0 * yy]).unsqueeze(0)


def blue_stripes_style(h: int, w: int) -> Tensor:
    """Cold, high-frequency style image."""
    xx = torch.arange(w).view(1, w).expand(h, w).float()
    stripes = (torch.sin(xx * 1.7) > 0).float()
    return torch.stack([0.05 + 0.1 * stripes, 0.2 + 0.5 * stripes, 0.4 + 0.6 * stripes]).unsqueeze(0)


def one_line(exc: BaseException) -> bool:
    return "\n" not in str(exc) and len(str(exc)) > 0


def write_published_adain(directory, *, vgg_seed: int, decoder_seed: int):
    """Random reference weights saved in pytorch-AdaIN's layout (vgg_normalised.pth, decoder.pth).

    Returns (directory, the reference encoder up to relu4_1, the reference decoder).
    """
    import torch
    from torch import nn

    ref_vgg = kaiming_(reference_vgg(), seed=vgg_seed).eval()
    ref_dec = kaiming_(reference_decoder(), seed=decoder_seed).eval()
    enc = nn.Sequential(*list(ref_vgg.children())[:31])
    with torch.no_grad():
        calibrate_last_conv(ref_dec, enc(smooth_image(0, 64, 64, batch=2)), mean=0.5, std=0.2)
    torch.save(ref_vgg.state_dict(), directory / "vgg_normalised.pth")
    torch.save(ref_dec.state_dict(), directory / "decoder.pth")
    return directory, enc, ref_dec


class RefSANetModel:
    """Eval.py: enc_1..enc_5 slices of vgg, Transform, decoder."""

    def __init__(self, vgg: nn.Sequential, transform: RefTransform, decoder: nn.Sequential) -> None:
        layers = list(vgg.children())
        self.enc4 = nn.Sequential(*layers[:31])  # input -> relu4_1
        self.enc5 = nn.Sequential(*layers[31:44])  # relu4_1 -> relu5_1
        self.transform, self.decoder = transform, decoder

    def features(self, x):
        c4 = self.enc4(x)
        return c4, self.enc5(c4)

    def transformed(self, content, style):
        c4, c5 = self.features(content)
        s4, s5 = self.features(style.expand(content.shape[0], -1, -1, -1))  # Eval.py's bmm wants equal batches
        return self.transform(c4, s4, c5, s5)

    def __call__(self, content, style):
        return self.decoder(self.transformed(content, style))


def write_published_sanet(directory, *, seed: int):
    """Random reference weights saved in GlebSBrykin/SANET's layout (vgg_normalised, transformer, decoder .pth).

    Returns (directory, the reference model as ``RefSANetModel``).
    """
    ref_vgg = kaiming_(reference_vgg(), seed=seed).eval()
    ref_tr = kaiming_(RefTransform(512), seed=seed + 1).eval()
    ref_dec = kaiming_(reference_decoder(), seed=seed + 2).eval()
    ref = RefSANetModel(ref_vgg, ref_tr, ref_dec)
    with torch.no_grad():
        calibrate_last_conv(
            ref_dec, smooth_image(0, 64, 64), mean=0.5, std=0.2, forward=lambda x: ref(x, smooth_image(1, 64, 64))
        )
    torch.save(ref_vgg.state_dict(), directory / "vgg_normalised.pth")
    torch.save(ref_tr.state_dict(), directory / "transformer.pth")
    torch.save(ref_dec.state_dict(), directory / "decoder.pth")
    return directory, ref
