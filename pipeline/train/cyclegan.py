"""CycleGAN (Zhu et al. 2017): unpaired training of a photo -> painting generator against a painting collection.

Domain A is the content manifest (photos), domain B the style manifest (paintings). Four networks:
``G_A`` (A -> B, the stylizer), ``G_B`` (B -> A), and 70x70 PatchGAN discriminators ``D_A`` (real B vs
``G_A``'s fakes) and ``D_B`` (real A vs ``G_B``'s fakes). The recipe is the paper's and the reference
code's defaults: LSGAN (mean squared error against 1 / 0), cycle loss L1 x 10 each way, identity loss
L1 x 0.5 x 10, an image pool of the last 50 fakes for the discriminators, Adam 2e-4 with beta1 0.5, the
learning rate constant for the first half of the steps and then decaying linearly to zero, random
crops (286 px resize, 256 px crops) and horizontal flips, batch 1, weights drawn from N(0, 0.02).

The reference code alternates an optimiser step of the generators (discriminators frozen) with one of
the discriminators (on pooled, detached fakes). Both backward passes see the weights before either
step, and Adam works per parameter, so one Adam over all four networks stepping once on the sum of the
two losses gives the same update, provided the generator loss cannot reach the discriminators' weights:
it calls them through ``frozen`` (detached parameters). That keeps the trainer loop's one optimiser and
one backward per step; the image pool lives in the task and restarts empty on resume (the reference
code does not save it either).

The checkpoint holds all four networks (``G_A.model.1.weight`` ...: each in the reference code's own
layout under its name), so a run resumes with its discriminators. ``pipeline.models.create("cyclegan",
weights=URI)`` takes ``G_A``; ``export_generator`` writes one generator as a plain ``latest_net_G_A.pth``.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pipeline.errors import WeightsError
from pipeline.models.cyclegan import ResnetGenerator, build_generator
from pipeline.models.weights import load_state_dict, read_metadata
from pipeline.train.config import TrainConfig
from pipeline.train.registry import register
from pipeline.train.task import Task

POOL_SIZE = 50


class NLayerDiscriminator(nn.Module):
    """The 70x70 PatchGAN (3 layers): (B,3,H,W) in [-1,1] -> (B,1,H/8-2,W/8-2) real/fake scores.

    Keys as the reference code's ``NLayerDiscriminator`` (``model.0.weight``, ``model.2.weight`` ...).
    """

    def __init__(self, ndf: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for c_in, c_out, stride in ((ndf, 2 * ndf, 2), (2 * ndf, 4 * ndf, 2), (4 * ndf, 8 * ndf, 1)):
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1),
                nn.InstanceNorm2d(c_out),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(8 * ndf, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class ImagePool:
    """The reference code's history of fakes: until full, return what comes in; then, per image, with
    probability 1/2 return a random stored fake (and store the new one in its place), else the new one."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.images: list[Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: Tensor) -> Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.random() > 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out)


def frozen(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` with its parameters detached: gradients reach ``x`` but never the module's weights."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, (x,))


def init_normal(net: nn.Module, std: float = 0.02) -> nn.Module:
    """The reference code's ``init_weights('normal', 0.02)``: conv weights N(0, std), biases 0."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def lsgan(scores: Tensor, real: bool) -> Tensor:
    return F.mse_loss(scores.float(), torch.full_like(scores.float(), 1.0 if real else 0.0))


class CycleGANNets(nn.Module):
    """The four networks; ``forward`` computes one step's loss terms, so DDP sees every network in one call."""

    def __init__(self, ngf: int, n_blocks: int, ndf: int) -> None:
        super().__init__()
        self.G_A = init_normal(ResnetGenerator(ngf, n_blocks))  # noqa: N815 - the reference code's names
        self.G_B = init_normal(ResnetGenerator(ngf, n_blocks))  # noqa: N815
        self.D_A = init_normal(NLayerDiscriminator(ndf))  # noqa: N815
        self.D_B = init_normal(NLayerDiscriminator(ndf))  # noqa: N815

    def forward(
        self, real_a: Tensor, real_b: Tensor, pools: tuple[ImagePool, ImagePool], cycle: float, identity: float
    ) -> dict[str, Tensor]:
        """Inputs (B,3,S,S) in [-1,1]; returns weighted ``gan``, ``cycle``, ``identity`` (generators) and ``D``."""
        fake_b, fake_a = self.G_A(real_a), self.G_B(real_b)
        rec_a, rec_b = self.G_B(fake_b), self.G_A(fake_a)
        terms = {
            "gan": lsgan(frozen(self.D_A, fake_b), True) + lsgan(frozen(self.D_B, fake_a), True),
            "cycle": cycle * (F.l1_loss(rec_a.float(), real_a) + F.l1_loss(rec_b.float(), real_b)),
        }
        if identity > 0:  # G_A should leave a painting alone, G_B a photo
            idt = F.l1_loss(self.G_A(real_b).float(), real_b) + F.l1_loss(self.G_B(real_a).float(), real_a)
            terms["identity"] = cycle * identity * idt
        pool_a, pool_b = pools
        pooled_b, pooled_a = pool_b.query(fake_b), pool_a.query(fake_a)
        d_a = lsgan(self.D_A(real_b), True) + lsgan(self.D_A(pooled_b), False)
        d_b = lsgan(self.D_B(real_a), True) + lsgan(self.D_B(pooled_a), False)
        terms["D"] = 0.5 * (d_a + d_b)
        return terms


@register
class CycleGANTask(Task):
    stylizer = "cyclegan"
    needs_encoder = False
    random_flip = True
    adam_betas = (0.5, 0.999)

    def __init__(self, config: TrainConfig, encoder: nn.Module | None) -> None:
        super().__init__(config, encoder)
        assert config.ngf and config.n_blocks  # resolved() filled them
        # the paper's discriminators are 64 wide like its generators; a narrower run narrows both
        self.net = CycleGANNets(config.ngf, config.n_blocks, ndf=config.ngf)
        self.cycle_weight = float(config.cycle_weight or 0)
        self.identity_weight = float(config.identity_weight or 0)
        self.pools = (ImagePool(POOL_SIZE, config.seed * 2), ImagePool(POOL_SIZE, config.seed * 2 + 1))

    def lr_at(self, step: int) -> float:
        """Constant for the first half of the steps, then linear towards zero (the reference ``lambda`` policy)."""
        steps = int(self.config.steps or 1)
        constant = steps // 2
        return float(self.config.lr or 0) * (1.0 - max(0, step - constant) / float(steps - constant + 1))

    def losses(self, net: nn.Module, content: Tensor, style: Tensor | None) -> dict[str, Tensor]:
        assert style is not None
        with self.autocast():
            terms = net(content * 2 - 1, style * 2 - 1, self.pools, self.cycle_weight, self.identity_weight)
        terms = {k: v.float() for k, v in terms.items()}
        terms["total"] = sum(terms.values())
        return terms

    @torch.no_grad()
    def stylize(self, net: nn.Module, content: Tensor, style: Tensor | None) -> Tensor:
        return ((net.G_A(content * 2 - 1).float() + 1) / 2).clamp(0, 1)

    def export(self, net: nn.Module) -> dict[str, Tensor]:
        return dict(net.state_dict())

    def metadata(self) -> dict[str, str]:
        return {"ngf": str(self.config.ngf), "n_blocks": str(self.config.n_blocks), "G_A": "content -> style"}


def export_generator(uri: str, generator: str = "A") -> dict[str, Tensor]:
    """One generator of a ``stylize train cyclegan`` checkpoint in the reference code's own keys
    (``model.1.weight`` ...), as its ``latest_net_G_A.pth`` / ``latest_net_G_B.pth`` hold them."""
    if generator not in ("A", "B"):
        raise WeightsError(f"generator must be A (content -> style) or B (style -> content), got {generator!r}")
    meta = read_metadata(uri)
    if meta.get("stylizer") != "cyclegan":
        raise WeightsError(f"{uri} is not a `stylize train cyclegan` checkpoint (stylizer {meta.get('stylizer')!r})")
    prefix = f"G_{generator}."
    state = {k[len(prefix) :]: v for k, v in load_state_dict(uri).items() if k.startswith(prefix)}
    if not state:
        raise WeightsError(f"{uri} holds no {prefix}* tensors")
    return dict(build_generator(state, f"{uri} G_{generator}").state_dict())  # checked, in the module's key order
