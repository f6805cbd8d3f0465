"""A training run as its loop sees it (``uwm_core.train``): built by ``setup``, then advanced one
optimiser step at a time, logged, saved, evaluated and handed to step hooks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from ..learning_curve import plot_learning_curve
from ..model import UnifiedWorldModel
from ..processing import ActionNormalizer
from .config import TrainConfig
from .data import Samples
from .distributed import Dist
from .step import EMA


@dataclass
class Run:
    cfg: TrainConfig
    dist: Dist
    dir: Path  # <out_dir>/<run_name>
    config: dict  # the resolved TrainConfig, written into config.yaml and every checkpoint
    model: UnifiedWorldModel  # raw weights, trained in place
    normalizer: ActionNormalizer
    objective: nn.Module  # the model's loss, DDP-wrapped with several processes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA
    samples: Samples
    loader: torch.utils.data.DataLoader  # this rank's training batches
    eval_model: UnifiedWorldModel | None  # rank 0: evaluated with the EMA weights copied in
    writer: SummaryWriter | None  # rank 0: TensorBoard
    step: int = 0  # optimiser steps done
    epoch: int = 0  # sampler position: the next batch is batch_in_epoch of epoch
    batch_in_epoch: int = 0

    @property
    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def close(self) -> None:
        """Flush TensorBoard and plot the learning curve (rank 0)."""
        if self.writer is not None:
            self.writer.close()
            plot_learning_curve(self.dir / "tb", self.dir / "learning_curve.png")


# hook(run, batches, infos), on every rank after every optimiser step: the step's micro-batches
# (dicts from the data pipeline: sample_id, has_actions, obs, ...) and their loss infos
# (UnifiedWorldModel.loss: loss, action_loss, t_action, ...). See uwm_core.train.train.
StepHook = Callable[[Run, list, list], None]
