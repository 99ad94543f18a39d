"""CycleGAN's ResNet generator (Zhu, Park, Isola & Efros, ICCV 2017), as junyanz/pytorch-CycleGAN-and-pix2pix builds it.

ReflectionPad(3), 7x7 conv, InstanceNorm (no affine parameters), ReLU; two stride-2 3x3 convs; ``n_blocks``
residual blocks (reflection pad, 3x3 conv, norm, ReLU, [dropout], reflection pad, 3x3 conv, norm); two
``ConvTranspose2d(k3, s2, p1, output_padding=1)``; reflection pad 3, 7x7 conv, tanh. Convs carry biases
(the repository sets ``use_bias`` for instance norm). Pixels go in and come out in [-1, 1].

The module's own ``state_dict`` keys are the published ones (one ``nn.Sequential`` named ``model``):
``model.1.weight``, ``model.4.weight``, ``model.10.conv_block.1.weight`` ... ``model.26.weight`` for
9 blocks. With ``use_dropout`` each block holds a ``Dropout`` at index 4, so its second conv is
``conv_block.6`` instead of ``conv_block.5``. ``cyclegan_state`` turns a published or user-trained
``*_net_G*.pth`` (or one of our training checkpoints) into exactly that layout, and the layout itself
says the width (``ngf``), the number of blocks and the dropout layout, so loading is a strict
``load_state_dict`` and anything else is one line naming the missing or unexpected keys.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from pipeline.errors import WeightsError
from pipeline.models.gan import GeneratorStylizer
from pipeline.models.registry import ModelCard, WeightSource, register
from pipeline.models.weights import cache_availability, load_into, load_state_dict, split_sha256

PRETRAINED_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/{name}.pth"
PUBLISHED = ("style_monet", "style_cezanne", "style_ukiyoe", "style_vangogh")
CYCLEGAN_HELP = (
    "cyclegan needs --weights: a CycleGAN ResNet generator state dict (*_net_G*.pth), e.g. "
    + PRETRAINED_URL.format(name="style_monet")
    + " (also style_cezanne, style_ukiyoe, style_vangogh; saved as latest_net_G.pth by the repository's "
    "scripts/download_cyclegan_model.sh; `stylize models fetch cyclegan` fetches them, then --weights style_monet), "
    "or a checkpoint of `stylize train cyclegan`"
)
# InstanceNorm buffers that track_running_stats=True (older versions of the repository) saved; the repository's
# own loader deletes them too (patch_instance_norm_state_dict), since the norm never uses them at test time
_LEGACY = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")
_BLOCK = re.compile(r"^model\.(\d+)\.conv_block\.(\d+)\.weight$")
# where the photo->painting generator sits in a `stylize train cyclegan` checkpoint
TRAINED_PREFIX = "G_A."


class ResnetBlock(nn.Module):
    """x + conv_block(x); ``conv_block`` indices follow the repository's (Dropout at 4 when used)."""

    def __init__(self, dim: int, use_dropout: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3),
            nn.InstanceNorm2d(dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """(B,3,H,W) in [-1,1] -> (B,3,H,W) in [-1,1]; H and W multiples of 4."""

    def __init__(self, ngf: int = 64, n_blocks: int = 9, use_dropout: bool = False) -> None:
        super().__init__()
        self.ngf, self.n_blocks, self.use_dropout = ngf, n_blocks, use_dropout
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for mult in (1, 2):  # two stride-2 downsamplings
            c = ngf * mult
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(4 * ngf, use_dropout) for _ in range(n_blocks)]
        for mult in (4, 2):
            c = ngf * mult
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(c // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def clean_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip DataParallel's ``module.`` prefixes, pick a training checkpoint's ``G_A`` and drop legacy norm buffers."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith(TRAINED_PREFIX) for k in state):
        state = {k[len(TRAINED_PREFIX) :]: v for k, v in state.items() if k.startswith(TRAINED_PREFIX)}
    return {k: v for k, v in state.items() if not _LEGACY.search(k)}


def layout_of(state: dict[str, Tensor], what: str) -> tuple[int, int, bool]:
    """(ngf, n_blocks, use_dropout) read from a cleaned state dict's keys and shapes; raises ``WeightsError``."""
    stem = state.get("model.1.weight")
    blocks: dict[int, set[int]] = {}
    for key in state:
        m = _BLOCK.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if stem is None and not blocks:
        shown = sorted(state)[:3]
        raise WeightsError(f"{what} is not a CycleGAN ResnetGenerator state dict (no model.1.weight); keys {shown}")
    if stem is not None and stem.dim() == 4:
        ngf = int(stem.shape[0])
    else:  # the stem is missing or odd: a block's width is 4 * ngf; load_into names what is wrong
        first = state[f"model.{min(blocks)}.conv_block.1.weight"] if blocks else None
        ngf = int(first.shape[0]) // 4 if first is not None else 64
    indices = sorted(blocks)
    n_blocks = len(indices)
    if indices and indices != list(range(10, 10 + n_blocks)):
        raise WeightsError(f"{what}: residual blocks at model.{indices}, expected model.10 onwards without gaps")
    use_dropout = any(6 in convs for convs in blocks.values())
    return ngf, n_blocks, use_dropout


def build_generator(state: dict[str, Tensor], what: str) -> ResnetGenerator:
    """A generator in the layout ``state`` describes, with ``state`` loaded strictly."""
    state = clean_state(state)
    ngf, n_blocks, use_dropout = layout_of(state, what)
    net = ResnetGenerator(ngf, n_blocks, use_dropout)
    load_into(net, state, what=f"{what} (ngf {ngf}, {n_blocks} blocks{', dropout' if use_dropout else ''})")
    return net


class CycleGAN(GeneratorStylizer):
    """Fixed-style generator: content (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1]; the style is in the weights.

    The network sees ``2x - 1`` and its tanh output is mapped back with ``(y + 1) / 2``. ``alpha`` blends
    the result with the photo in pixel space. Takes ``[Style()]``.
    """

    name = "cyclegan"


def create_cyclegan(
    weights: str | None = None, encoder_weights: str = "auto", device: str | torch.device = "cpu"
) -> CycleGAN:
    """Load a CycleGAN generator (.pth read weights-only, or safetensors; a path or URI); ignores encoder_weights."""
    del encoder_weights  # accepted so every family shares the factory signature
    if weights is None:
        raise WeightsError(CYCLEGAN_HELP)
    what = f"cyclegan ({split_sha256(str(weights))[0]})"
    net = build_generator(load_state_dict(str(weights)), what)
    return CycleGAN(net).requires_grad_(False).to(device).eval()


register(
    ModelCard(
        stylizer=CycleGAN,
        paper="Zhu, Park, Isola & Efros, Unpaired Image-to-Image Translation using Cycle-Consistent "
        "Adversarial Networks, ICCV'17",
        factory=create_cyclegan,
        weight_sources=tuple(
            WeightSource(
                f"{name}.pth (ResnetGenerator, 9 blocks, ngf 64; photo -> {name.removeprefix('style_')})",
                PRETRAINED_URL.format(name=name),
                "none published for the weights (the repository's code is BSD)",
                file=f"{name}.pth",
                folder="cyclegan",
                url=PRETRAINED_URL.format(name=name),
                size=45_520_000,  # 11,378,179 float32 parameters
            )
            for name in PUBLISHED
        )
        + (
            WeightSource(
                "a generator of `stylize train cyclegan` (safetensors, or exported as latest_net_G_A.pth)",
                "`stylize train cyclegan`",
                "yours",
            ),
        ),
        preprocessing=(
            "[0,1] -> [-1,1]; content reflect-padded to a multiple of 4; tanh output mapped back to [0,1], "
            "cropped and clamped; alpha blends with the photo"
        ),
        availability=lambda: cache_availability("cyclegan", f"{PUBLISHED[0]}.pth", CYCLEGAN_HELP),
        default_network=PUBLISHED[0],
    )
)
