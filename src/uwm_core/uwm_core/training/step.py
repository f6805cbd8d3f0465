"""The pieces of one optimisation step: the UWM loss of a batch (DDP-wrappable), AdamW with its
learning-rate schedule (Table V), and the EMA of the trainable weights."""
from __future__ import annotations

import functools

import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn

from ..model import UnifiedWorldModel
from ..model.precision import cpu_has_native_bf16
from .config import TrainConfig


class Objective(nn.Module):
    """DDP synchronises gradients through forward(): the UWM loss (Eq. 1) of a batch."""

    def __init__(self, model: UnifiedWorldModel):
        super().__init__()
        self.model = model

    def forward(self, obs, actions, next_latents, has_actions, state):
        return self.model.loss(obs, actions, next_latents, has_actions, state)


def batch_loss(objective: nn.Module, model: UnifiedWorldModel, batch: dict, device: torch.device, bf16: bool):
    """Loss of one batch from the data pipeline; next frames are VAE-encoded here unless cached."""
    obs = batch["obs"].to(device, non_blocking=True)  # (B, V, To, 3, S, S)
    actions = batch["actions"].to(device, non_blocking=True)  # (B, Ta, A)
    has_actions = batch["has_actions"].to(device, non_blocking=True)  # (B,)
    state = batch["state"].to(device, non_blocking=True) if "state" in batch else None  # (B, To, state_dim)
    next_latents = None
    if model.vae is not None:
        if "next_latents" in batch:
            next_latents = batch["next_latents"].to(device, non_blocking=True)  # (B, V, C, To, h, w)
        else:
            next_latents = model.encode_frames(batch["next_obs"].to(device, non_blocking=True))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and native_bf16(device)):
        return objective(obs, actions, next_latents, has_actions, state)


@functools.cache  # once per device, not at every batch
def native_bf16(device: torch.device) -> bool:
    """bf16 autocast pays off: any CUDA device, or a CPU with bf16 instructions (else it is emulated)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def make_optimizer(cfg: TrainConfig, model: nn.Module):
    """AdamW over the trainable weights and its learning-rate schedule (linear warmup, then
    constant or cosine)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                  weight_decay=cfg.weight_decay, fused=True)  # one kernel for all tensors
    scheduler = get_scheduler("constant_with_warmup" if cfg.lr_schedule == "constant" else "cosine", optimizer,
                              num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.num_steps)
    return optimizer, scheduler


class EMA:
    """Exponential moving average of the trainable weights (diffusers EMAModel, with warmup)."""

    def __init__(self, model: nn.Module, decay: float):
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.ema = EMAModel([p for p in model.parameters() if p.requires_grad], decay=decay,
                            use_ema_warmup=True, power=0.75, foreach=True)

    def step(self, model: nn.Module):
        self.ema.step([p for p in model.parameters() if p.requires_grad])

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the trainable weights replaced by their averages (CPU)."""
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        for name, shadow in zip(self.names, self.ema.shadow_params):
            state[name] = shadow.detach().cpu().contiguous()
        return state

    def copy_to(self, model: nn.Module):
        self.ema.copy_to([p for p in model.parameters() if p.requires_grad])

    def state_dict(self) -> dict:
        """The averaging state (step count, decay settings) without the averages themselves: those
        are the weights of the checkpoint it is saved with (``weights``)."""
        return {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}

    def load_state_dict(self, state: dict, averages: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict()`` and the averages, copied into place (on the model's device)."""
        self.ema.load_state_dict({**state, "shadow_params": None})  # None: keep the current tensors
        with torch.no_grad():
            for name, shadow in zip(self.names, self.ema.shadow_params):
                shadow.copy_(averages[name])
