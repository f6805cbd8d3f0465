"""ResNet-18 observation encoder: one feature vector per view and frame, concatenated."""
from pathlib import Path

import torch
import torchvision
from einops import rearrange
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _batchnorm_to_groupnorm(module: nn.Module) -> nn.Module:
    """BatchNorm misbehaves with small per-GPU batches and in eval; use GroupNorm (16 ch/group)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(child.num_features // 16, child.num_features))
        else:
            _batchnorm_to_groupnorm(child)
    return module


def build_resnet18(weights: str | None, feature_dim: int) -> nn.Module:
    """ResNet-18 with ImageNet weights (torchvision enum name or local .pth), GroupNorm, new fc."""
    resnet = torchvision.models.resnet18(weights=None)
    if weights:
        if Path(weights).is_file():
            state = torch.load(weights, map_location="cpu", weights_only=True)
        else:
            try:
                state = torchvision.models.ResNet18_Weights[weights].get_state_dict(progress=False)
            except KeyError:
                raise ValueError(f"model.resnet_weights: {weights!r} is neither a file nor one of "
                                 f"{[w.name for w in torchvision.models.ResNet18_Weights]}") from None
            except Exception as exc:  # no network, proxy, corrupt cache
                raise RuntimeError(
                    f"cannot load the ImageNet ResNet-18 weights torchvision.models.ResNet18_Weights.{weights} "
                    f"({type(exc).__name__}: {exc}). Download them where the network allows it "
                    f"(they are cached under ~/.cache/torch/hub/checkpoints) and set "
                    f"model.resnet_weights=/path/to/resnet18.pth, or model.resnet_weights=null to start from random weights."
                ) from exc
        resnet.load_state_dict(state)
    resnet.fc = nn.Linear(resnet.fc.in_features, feature_dim)
    return _batchnorm_to_groupnorm(resnet)


class ObservationEncoder(nn.Module):
    """Images (B, V, T, 3, H, W) in [0, 1] -> features (B, V*T*feature_dim), one shared ResNet."""

    def __init__(self, weights: str | None, feature_dim: int):
        super().__init__()
        # channels-last: oneDNN (CPU) and cuDNN (tensor cores) run convolutions fastest in NHWC
        self.resnet = build_resnet18(weights, feature_dim).to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B = images.shape[0]
        x = rearrange(images, "b v t c h w -> (b v t) c h w")
        x = ((x - self.mean) / self.std).to(self.resnet.conv1.weight.dtype)  # the inference precision
        x = x.contiguous(memory_format=torch.channels_last)
        feats = self.resnet(x)  # (B*V*T, F)
        return rearrange(feats, "(b n) f -> b (n f)", b=B)  # (B, V*T*F)
