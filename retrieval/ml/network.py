"""The SE-CBIR classifiers: a timm backbone with the thesis's head, in 3 or 4 input channels.

Head (thesis, section 3.1.1): global average pooling -> batch norm -> dropout 0.2 -> dense 64
-> dropout 0.2 -> dense 7. The thesis does not name the activation of the 64-unit layer; a
ReLU is used (two stacked linear layers without one would collapse into a single linear map).

Retrieval features are the globally pooled output of the last convolutional stage, before
the head, L2-normalised (:meth:`SECBIRNet.features`); the same code path serves library images
and queries.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

import retrieval.ml  # noqa: F401  (torchvision shim before timm)
import timm
from retrieval.ml.configs import ModelConfig
from retrieval.ml.weights import load_imagenet_weights

NUM_CLASSES = 7
RGB_CHANNELS = 3
RGB_SALIENCY_CHANNELS = 4


def create_backbone(config: ModelConfig) -> nn.Module:
    """The config's timm backbone without pooling or head (``forward_features`` gives the last
    feature maps), randomly initialised; its feature size must be the config's."""
    backbone = timm.create_model(config.backbone, pretrained=False, num_classes=0, global_pool="",
                                 **config.backbone_kwargs)
    if backbone.num_features != config.feature_dim:
        raise ValueError(f"{config.name}: backbone gives {backbone.num_features} features, "
                         f"config says {config.feature_dim}")
    return backbone


class SECBIRNet(nn.Module):
    def __init__(self, config: ModelConfig, *, num_classes: int = NUM_CLASSES, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config)
        self.weights_source = load_imagenet_weights(self.backbone, config) if pretrained else "not loaded"
        self.head = nn.Sequential(
            nn.BatchNorm1d(config.feature_dim),
            nn.Dropout(config.dropout),
            nn.Linear(config.feature_dim, config.head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.head_hidden, num_classes),
        )

    @property
    def in_chans(self) -> int:
        return self.stem.in_channels

    @property
    def stem(self) -> nn.Conv2d:
        """The first convolution (timm's ``pretrained_cfg['first_conv']``)."""
        name = self.backbone.pretrained_cfg.get("first_conv", "conv_stem")
        return self.backbone.get_submodule(name)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled output of the last convolutional stage, (N, feature_dim)."""
        return self.backbone.forward_features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised retrieval features, float32."""
        return F.normalize(self.pooled(x).float(), dim=1)

    def new_layer_names(self) -> set[str]:
        """Parameters that the adaptive learning rate treats as new: the head (3-channel model)."""
        return {f"head.{name}" for name, _ in self.head.named_parameters()}


#: How the saliency channel's filter of the widened stem starts (``train_model --stem-init``).
#: ``mean``: the mean of the trained RGB filters, so the new channel first responds like the
#: image's brightness; ``zero``: zeros, so the 4-channel model starts as exactly the trained
#: 3-channel model, whatever the saliency map, and learns to use the map from there.
STEM_MEAN, STEM_ZERO = "mean", "zero"
STEM_INITS = (STEM_MEAN, STEM_ZERO)
DEFAULT_STEM_INIT = STEM_MEAN


def widen_to_saliency(model: SECBIRNet, *, stem_init: str = DEFAULT_STEM_INIT) -> SECBIRNet:
    """A 4-channel (RGB + saliency) copy of a trained 3-channel model.

    The stem convolution gets a fourth input channel: the RGB filters are copied exactly and
    the saliency filter starts as their mean (``stem_init="mean"``) or as zeros (``"zero"``:
    the widened model's output then equals the 3-channel model's on any input). Everything
    else is kept.
    """
    if model.in_chans != RGB_CHANNELS:
        raise ValueError(f"expected a 3-channel model, got {model.in_chans} channels")
    if stem_init not in STEM_INITS:
        raise ValueError(f"unknown stem init {stem_init!r}; use one of {', '.join(STEM_INITS)}")
    wide = copy.deepcopy(model)
    old = wide.stem
    # A copy keeps the layer's class and padding (timm's TF-style Conv2dSame included);
    # only the weight gains an input channel.
    new = copy.deepcopy(old)
    out_channels, _, kh, kw = old.weight.shape
    new.weight = nn.Parameter(old.weight.new_empty(out_channels, RGB_SALIENCY_CHANNELS // old.groups, kh, kw))
    new.in_channels = RGB_SALIENCY_CHANNELS
    with torch.no_grad():
        new.weight[:, :RGB_CHANNELS] = old.weight
        if stem_init == STEM_ZERO:
            new.weight[:, RGB_CHANNELS:] = 0.0
        else:
            new.weight[:, RGB_CHANNELS:] = old.weight.mean(dim=1, keepdim=True)
    name = wide.backbone.pretrained_cfg.get("first_conv", "conv_stem")
    parent_name, _, attr = name.rpartition(".")
    parent = wide.backbone.get_submodule(parent_name) if parent_name else wide.backbone
    setattr(parent, attr, new)
    return wide


def stem_parameter_names(model: SECBIRNet) -> set[str]:
    name = model.backbone.pretrained_cfg.get("first_conv", "conv_stem")
    return {f"backbone.{name}.{p}" for p, _ in model.stem.named_parameters()}


def build_model(config: ModelConfig, *, channels: int = RGB_CHANNELS, pretrained: bool = True) -> SECBIRNet:
    """A fresh classifier. A 4-channel model is normally made by :func:`widen_to_saliency`."""
    model = SECBIRNet(config, pretrained=pretrained)
    return widen_to_saliency(model) if channels == RGB_SALIENCY_CHANNELS else model
