"""``TrainConfig``: one training run's settings, and each family's defaults (``FAMILIES``).

Torch-free, so the CLI can validate a command (one ``ConfigError`` line, like ``JobConfig``) before
anything heavy is imported or Ray is started. ``FAMILIES`` is the one list of trainable families;
``pipeline.train.registry`` maps each name to its ``Task`` class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.config import one_line_error
from pipeline.devices import check_device
from pipeline.errors import ConfigError
from pipeline.storage import ALLOWED_SCHEMES


@dataclass(frozen=True)
class Family:
    """What a family's config needs: the papers' defaults, its style input and its crop multiple."""

    defaults: dict[str, Any]
    style_input: Literal["style", "style_manifest"]  # one style image (johnson) or a manifest of them
    image_multiple: int  # the network's total stride: crops must divide by it


# Per-family defaults from the papers / reference code. Loss weights are stated for a loss network
# with Caffe input scale (BGR 0-255: hed-vgg16, vgg_normalised); see ``task.feature_scale``. adain and
# sanet further put each layer on vgg_normalised's scale (``task.layer_gains``), as their papers' weights assume.
FAMILIES: dict[str, Family] = {
    # Johnson et al.; content 30 is pytorch/examples' 1e5 at ImageNet scale converted to Caffe scale. Its style
    # weight converts to 3600, but measured with hed-vgg16 that sacrifices all content (style loss of an
    # unchanged photo 5.9e6 vs content loss of a flat grey output 2.1e4); 300 gives a ratio of ~20.
    "johnson": Family(
        defaults={
            "steps": 40000,
            "batch_size": 4,
            "lr": 1e-3,
            "lr_decay": 0.0,
            "content_weight": 30.0,
            "style_weight": 300.0,
            "tv_weight": 1e4,
            "content_layers": ["relu2_2"],
            "style_layers": ["relu1_2", "relu2_2", "relu3_3", "relu4_3"],
            "resize_factor": 1.0,
        },
        style_input="style",
        image_multiple=4,
    ),
    # Huang & Belongie / naoto0804 pytorch-AdaIN train.py
    "adain": Family(
        defaults={
            "steps": 160000,
            "batch_size": 8,
            "lr": 1e-4,
            "lr_decay": 5e-5,
            "content_weight": 1.0,
            "style_weight": 10.0,
            "content_layers": ["relu4_1"],
            "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1"],
            "resize_factor": 2.0,
        },
        style_input="style_manifest",
        image_multiple=8,
    ),
    # Park & Lee 2019, Sec. 3.3 (lambda_c=1, lambda_s=3, lambda_identity1=1, lambda_identity2=50)
    "sanet": Family(
        defaults={
            "steps": 160000,
            "batch_size": 5,
            "lr": 1e-4,
            "lr_decay": 5e-5,
            "content_weight": 1.0,
            "style_weight": 3.0,
            "identity1_weight": 1.0,
            "identity2_weight": 50.0,
            "content_layers": ["relu4_1", "relu5_1"],
            "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
            "resize_factor": 2.0,
        },
        style_input="style_manifest",
        image_multiple=16,
    ),
    # Zhu et al. 2017 / pytorch-CycleGAN-and-pix2pix defaults: batch 1, Adam 2e-4 (beta1 0.5 in the task), load 286
    # then crop 256, lambda 10, identity 0.5, resnet_9blocks at ngf 64. The paper's 200 epochs are ~1.3M steps
    # for monet2photo's 6,287 photos; the default is shorter. The lr is constant for half the steps, then decays.
    "cyclegan": Family(
        defaults={
            "steps": 200000,
            "batch_size": 1,
            "lr": 2e-4,
            "lr_decay": 0.0,
            "cycle_weight": 10.0,
            "identity_weight": 0.5,
            "ngf": 64,
            "n_blocks": 9,
            "resize_factor": 286 / 256,
        },
        style_input="style_manifest",
        image_multiple=4,
    ),
}


class TrainConfig(BaseModel):
    """One training run. ``None`` fields take the family default (``FAMILIES``) in ``resolved()``.

    Any invalid value is one ``ConfigError`` line (``invalid train config: lr: ...``), never a pydantic
    traceback. Changing ``stylizer`` or the style makes another run: ``check_resume`` refuses to mix them.
    """

    model_config = ConfigDict(extra="forbid")

    stylizer: str
    content_manifest: str
    output: str
    style: str | None = None
    style_manifest: str | None = None
    steps: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    lr_decay: float | None = Field(default=None, ge=0)
    image_size: int = Field(default=256, ge=16)
    resize_to: int | None = Field(default=None, ge=16)
    style_size: int | None = Field(default=None, ge=16)
    seed: int = Field(default=0, ge=0)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    encoder_weights: str = "auto"
    init_from: str | None = None
    content_weight: float | None = Field(default=None, ge=0)
    style_weight: float | None = Field(default=None, ge=0)
    tv_weight: float | None = Field(default=None, ge=0)
    identity1_weight: float | None = Field(default=None, ge=0)
    identity2_weight: float | None = Field(default=None, ge=0)
    cycle_weight: float | None = Field(default=None, ge=0)  # cyclegan: lambda of the L1 cycle loss
    identity_weight: float | None = Field(default=None, ge=0)  # cyclegan: identity loss, as a fraction of lambda
    ngf: int | None = Field(default=None, ge=1)  # cyclegan: generator (and discriminator) width
    n_blocks: int | None = Field(default=None, ge=0)  # cyclegan: residual blocks of the generators
    content_layers: list[str] | None = None
    style_layers: list[str] | None = None
    checkpoint_every: int = Field(default=1000, ge=1)
    log_every: int = Field(default=50, ge=1)
    workers: int = Field(default=1, ge=0)
    cpus_per_worker: int | None = Field(default=None, ge=1)
    max_failures: int = Field(default=2, ge=0)
    samples: int = Field(default=4, ge=1, le=16)
    cache_images: int = Field(default=512, ge=0)
    allowed_schemes: list[str] = Field(default_factory=lambda: sorted(ALLOWED_SCHEMES))

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(one_line_error(exc, TrainConfig.model_fields, "train config")) from None

    @field_validator("stylizer")
    @classmethod
    def _stylizer(cls, v: str) -> str:
        if v not in FAMILIES:
            raise ValueError(f"must be one of {', '.join(FAMILIES)}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        try:
            return check_device(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @property
    def family(self) -> Family:
        return FAMILIES[self.stylizer]

    def resolved(self) -> TrainConfig:
        """A copy with family defaults filled in and cross-field checks done; raises ``ConfigError``."""
        family = self.family
        defaults = family.defaults
        data = self.model_dump()
        for key, value in defaults.items():
            if key in data and data[key] is None:
                data[key] = value
        for key in ("tv_weight", "identity1_weight", "identity2_weight"):
            if data[key] is None:
                data[key] = 0.0
        if data["resize_to"] is None:
            data["resize_to"] = int(round(self.image_size * defaults["resize_factor"]))
        if data["style_size"] is None:
            data["style_size"] = data["resize_to"]
        if data["resize_to"] < self.image_size:
            raise ConfigError(f"--resize-to ({data['resize_to']}) must be at least --image-size ({self.image_size})")
        if family.style_input == "style" and not self.style:
            raise ConfigError(f"{self.stylizer} trains one network per style: give --style IMAGE")
        if family.style_input == "style_manifest" and not self.style_manifest:
            raise ConfigError(f"{self.stylizer} trains on many styles: give --style-manifest MANIFEST")
        if self.image_size % family.image_multiple:
            raise ConfigError(
                f"{self.stylizer} needs --image-size a multiple of {family.image_multiple}, got {self.image_size}"
            )
        return TrainConfig(**data)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
