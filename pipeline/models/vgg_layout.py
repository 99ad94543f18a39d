"""The VGG16/19 layout and input conventions: block sizes, layer names, ImageNet and Caffe input maps.

A leaf (torch only) shared by the encoder (``vgg``) and its weight sources (``hed``), so neither needs the
other's module for these: ``vgg`` loads ``hed`` weights, ``hed`` checks them against this layout.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Arch = Literal["vgg16", "vgg19"]
CONVS_PER_BLOCK: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
CHANNELS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def conv_names(arch: Arch) -> list[str]:
    return [f"conv{b + 1}_{i + 1}" for b, n in enumerate(CONVS_PER_BLOCK[arch]) for i in range(n)]


def layer_order(arch: Arch) -> list[str]:
    """Every named output in forward order: relu1_1, relu1_2, pool1, relu2_1, ..."""
    order: list[str] = []
    for b, n in enumerate(CONVS_PER_BLOCK[arch]):
        order += [f"relu{b + 1}_{i + 1}" for i in range(n)]
        order.append(f"pool{b + 1}")
    return order


def imagenet_affine() -> tuple[Tensor, Tensor]:
    """(weight (3,3), bias (3,)) mapping RGB [0,1] to torchvision's normalised input."""
    std = torch.tensor(IMAGENET_STD)
    return torch.diag(1.0 / std), -torch.tensor(IMAGENET_MEAN) / std


def caffe_affine() -> tuple[Tensor, Tensor]:
    """(weight, bias) mapping RGB [0,1] to Caffe's BGR, 0-255, mean subtracted."""
    weight = torch.zeros(3, 3)
    for out_c in range(3):
        weight[out_c, 2 - out_c] = 255.0
    return weight, -torch.tensor(CAFFE_MEAN_BGR)
