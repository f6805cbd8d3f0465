"""``trace_samples=true``: a step hook that writes, per rank, one JSON line per optimiser step to
``<run>/trace/rank<r>.jsonl``: the step, the ids of its samples, whether each has actions, their
action timesteps, and a checksum of the trained weights. It shows which samples every rank saw in
which order (disjoint shards, resume continuing the same sequence) and that DDP keeps the ranks'
weights equal, at the cost of one pass over the weights per step."""
from __future__ import annotations

import json

import torch
from torch import nn

from .run import Run


def write_sample_trace(run: Run, batches: list[dict], infos: list[dict]) -> None:
    """The StepHook that ``trace_samples`` adds."""
    line = {"step": run.step, "samples": torch.cat([b["sample_id"] for b in batches]).tolist(),
            "has_actions": torch.cat([b["has_actions"] for b in batches]).tolist(),
            "t_action": torch.cat([i["t_action"] for i in infos]).tolist(),
            "params": parameter_checksum(run.model)}
    path = run.dir / "trace" / f"rank{run.dist.rank}.jsonl"
    path.parent.mkdir(exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def parameter_checksum(model: nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters() if p.requires_grad))
