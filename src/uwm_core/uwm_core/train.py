"""uwm-train: pretrain, finetune and cotrain a Unified World Model (paper III-D, -A2, Table V).

One process (CPU or one GPU):
    uwm-train --config config/train/pretrain.yaml datasets=[data/droid]
One node with N GPUs (DDP over NCCL; gloo when there is no GPU):
    torchrun --nproc-per-node N -m uwm_core.train --config config/train/pretrain.yaml datasets=[data/droid]
M nodes with N GPUs each (run on every node; NODE_RANK = 0 .. M-1, MASTER = node 0's host name):
    torchrun --nnodes M --node-rank $NODE_RANK --nproc-per-node N --master-addr $MASTER --master-port 29500 \\
        -m uwm_core.train --config config/train/pretrain.yaml datasets=[data/droid]
Finetune and cotrain:
    uwm-train --config config/train/finetune.yaml init_from=runs/<run>/checkpoint datasets=[data/demos]
    uwm-train --config config/train/cotrain.yaml datasets=[data/droid] video_datasets=[data/videos]
Resume exactly after Ctrl-C, SIGTERM (preemption) or a crash (from the latest checkpoint):
    uwm-train resume=runs/<run> [num_steps=...]

Any TrainConfig field (uwm_core/training/config.py: every setting and its default) can be
overridden as key=value (lists as datasets=[a,b], model settings as model.depth=8).
``batch_size`` is per process: the effective batch is batch_size x grad_accum x processes. The run directory ``<out_dir>/<run_name>/`` holds:

    config.yaml              the resolved training and model configuration
    checkpoint/              the latest checkpoint (EMA weights, what WorldModel.from_checkpoint
                             loads) with training_state.pt for resume
    checkpoints/step_N/      a checkpoint (EMA weights) every save_every steps
    tb/                      TensorBoard: losses, learning rate, grad norm, throughput, eval
    images/step_N.png        forward-dynamics predictions next to the true next frames
    learning_curve.png       held-out action error and observation sensitivity against steps
    trace/rank<r>.jsonl      with trace_samples=true: every step's samples (uwm_core.training.trace)

Colour jitter perturbs each camera's current and next frames alike when next frames are
encoded on the fly; with the latent cache the targets are the cached (unjittered) latents, so
the jitter then only touches the current frames the observation encoder sees.

This file reads top to bottom: ``setup`` builds a Run (data, model, optimiser, DDP), ``loop`` trains
it; the pieces are in uwm_core/training/ (data, step, checkpoints, evaluation, ...).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import yaml
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .checkpoint import load_checkpoint, read_checkpoint_config
from .config import load_model_config, model_config_to_dict
from .data import action_normalizer, state_normalizer
from .durable import replace_file
from .model import UnifiedWorldModel
from .stop_request import StopRequest
from .training.checkpoints import load_latest, restore, save_run, seed_ranks
from .training.config import TrainConfig, config_dict, load_train_config
from .training.data import batch_loader, batch_stream, open_training_data, split_samples
from .training.distributed import Dist, setup_distributed, teardown_distributed
from .training.evaluation import evaluate_run
from .training.run import Run, StepHook
from .training.step import EMA, Objective, batch_loss, make_optimizer
from .training.trace import write_sample_trace
from .training.vae_preparation import prepare_vae


# ====================================================================== setup
def setup(cfg: TrainConfig, d: Dist) -> Run:
    """Data, model, optimiser and DDP of a new or resumed run. The run directory is created last,
    once all of that succeeded: a run that fails to start leaves nothing a later one could mistake."""
    if cfg.resume:
        run_dir = Path(cfg.resume)
    else:  # the default name: rank 0's clock for all ranks
        run_dir = Path(cfg.out_dir) / (cfg.run_name or d.from_rank0(f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"))
        if run_dir.exists():
            raise ValueError(f"run_name: {run_dir} already exists; choose another run_name or resume={run_dir}")
    robot, video = open_training_data(cfg)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model, normalizer, resumed = build_model(cfg, robot, video, run_dir, d)
    model.to(d.device)
    samples = split_samples(cfg, model, robot, video, normalizer, d)  # checked before the slow VAE work
    if not cfg.resume and not cfg.init_from:
        prepare_vae(model, samples.datasets, cfg, d)  # changes the VAE: before its latent caches
    loader = batch_loader(samples, model, cfg, d)
    optimizer, scheduler = make_optimizer(cfg, model)
    objective = Objective(model)
    if d.world_size > 1:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    run = Run(cfg, d, run_dir, config_dict(cfg) | {"resume": None}, model, normalizer, objective, optimizer,
              scheduler, EMA(model, cfg.ema_decay), samples, loader,
              eval_model=copy.deepcopy(model).eval() if d.main else None, writer=None)
    if resumed is not None:
        restore(run, resumed)
    else:
        seed_ranks(cfg, d)

    d.barrier()  # every rank has checked that a new run directory does not exist yet
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=bool(cfg.resume))
        resolved = {"train": run.config, "model": model_config_to_dict(model.cfg)}
        replace_file(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        run.writer = SummaryWriter(str(run_dir / "tb"), purge_step=run.step if cfg.resume else None)
    d.barrier()
    d.say(f"run {run_dir} | {len(samples.train_set)} training samples ({int(samples.train_set.has_actions.sum())} "
          f"with actions) from {len(samples.datasets)} dataset(s), {len(samples.val_set)} eval samples | "
          f"{sum(p.numel() for p in run.trainable) / 1e6:.1f}M trainable parameters | {d.world_size} process(es) on "
          f"{d.device.type}, {cfg.batch_size * cfg.grad_accum * d.world_size} samples per step")
    return run


def build_model(cfg: TrainConfig, robot: list, video: list, run_dir: Path, d: Dist):
    """(model, action normaliser, training state or None): the run's latest checkpoint (resume),
    init_from's (finetune: its architecture, weights and normaliser) or new from the preset."""
    if cfg.resume:  # a run that started was checked then
        return load_latest(run_dir, d)
    data = robot[0]
    if cfg.init_from:
        ckpt_cfg, _ = read_checkpoint_config(cfg.init_from)
        check_learns_from_video(ckpt_cfg, video)
        if sorted(ckpt_cfg.cameras) != sorted(data.cameras) or ckpt_cfg.action_dim != data.action_dim:
            raise ValueError(f"init_from: the checkpoint {cfg.init_from} has cameras {ckpt_cfg.cameras} and action_dim "
                             f"{ckpt_cfg.action_dim}, but {data.path} has cameras {data.cameras} and action_dim "
                             f"{data.action_dim}")
        if ckpt_cfg.use_state and ckpt_cfg.state_dim != data.state_dim:
            raise ValueError(f"init_from: the checkpoint {cfg.init_from} uses proprioceptive state of "
                             f"{ckpt_cfg.state_dim} dims, {data.path} has state_dim {data.state_dim}")
        model, normalizer, _ = load_checkpoint(cfg.init_from)  # its normaliser, as the reference does
        d.say(f"initialised from {cfg.init_from} (its architecture and action normaliser)")
        return model, normalizer, None
    mcfg = load_model_config(cfg.model_preset, {**cfg.model, "cameras": list(data.cameras),
                                                "action_dim": data.action_dim, "state_dim": data.state_dim})
    check_learns_from_video(mcfg, video)
    if mcfg.use_state and not mcfg.state_dim:
        raise ValueError(f"model.use_state: {data.path} has no proprioceptive state (convert the bags with "
                         f"uwm-bag2dataset, which records the end-effector pose and gripper), or set "
                         f"model.use_state=false")
    model = UnifiedWorldModel(mcfg)
    normalizer = action_normalizer(robot)
    if model.state_dim:
        model.set_state_stats(state_normalizer(robot))
    return model, normalizer, None


def check_learns_from_video(model_cfg, video: list) -> None:
    if video and not model_cfg.variant_spec.image_diffusion:
        raise ValueError(f"video_datasets: the {model_cfg.variant} variant has no image diffusion and cannot learn "
                         "from action-free video")


# ====================================================================== training
def train(cfg: TrainConfig, hooks: Sequence[StepHook] = ()) -> Path:
    """Train as configured; returns the run directory. Works under torchrun (DDP) as well.

    ``hooks`` are called on every rank after every optimiser step as ``hook(run, batches, infos)``:
    the Run (its model, optimiser, ``step``, ``dir``, ...), the step's micro-batches and their loss
    infos, to record or check what the run does. ``trace_samples=true`` adds ``write_sample_trace``."""
    d = setup_distributed(cfg.device)
    try:
        run = setup(cfg, d)
        try:
            loop(run, [*hooks, write_sample_trace] if cfg.trace_samples else list(hooks))
        finally:
            run.close()
        return run.dir
    finally:
        teardown_distributed(d)


def loop(run: Run, hooks: Sequence[StepHook]) -> None:
    """Optimiser steps until num_steps or a stop request (Ctrl-C, SIGTERM), then a checkpoint;
    logging, checkpoints and evaluations every log_every, save_every and eval_every steps."""
    cfg, d, model = run.cfg, run.dist, run.model
    stop = StopRequest(lambda name: tqdm.write(f"{name}: saving a checkpoint at the end of this step, then stopping "
                                             "(Ctrl-C again aborts)"))
    throughput = Throughput(cfg.batch_size * cfg.grad_accum * d.world_size, run.step)
    batches = batch_stream(run.loader, run.samples.sampler, run.epoch, run.batch_in_epoch)
    bar = tqdm(total=cfg.num_steps, initial=run.step, desc=run.dir.name, unit="step", disable=not d.main,
               dynamic_ncols=True)
    model.train()
    try:
        while run.step < cfg.num_steps:
            micro_batches, infos = [], []
            for micro in range(cfg.grad_accum):
                run.epoch, run.batch_in_epoch, batch = next(batches)
                last = micro == cfg.grad_accum - 1  # DDP all-reduces the gradients once, after the last
                with contextlib.nullcontext() if last or d.world_size == 1 else run.objective.no_sync():
                    loss, info = batch_loss(run.objective, model, batch, d.device, cfg.bf16)
                    (loss / cfg.grad_accum).backward()
                micro_batches.append(batch)
                infos.append(info)
            grad_norm = nn.utils.clip_grad_norm_(run.trainable, cfg.clip_grad_norm or math.inf)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            run.ema.step(model)
            run.step += 1
            bar.update(1)
            for hook in hooks:
                hook(run, micro_batches, infos)
            stopping = d.any(stop.requested)  # all ranks stop after the same step
            saving = run.step % cfg.save_every == 0 or run.step == cfg.num_steps or stopping
            if run.step % cfg.log_every == 0 or saving:  # never save a diverged model
                log_step(run, infos, grad_norm, throughput.read(run.step), bar)
            if saving:
                save_run(run)
            if cfg.eval_every and run.step % cfg.eval_every == 0 and run.step != cfg.num_steps:
                evaluate_run(run)
            if stopping:
                d.say(f"stopped at step {run.step}; continue with: uwm-train resume={run.dir}")
                break
        if run.step == cfg.num_steps:
            evaluate_run(run)
    finally:
        stop.close()
        bar.close()


def log_step(run: Run, infos: list[dict], grad_norm: torch.Tensor, samples_per_s: float, bar: tqdm) -> None:
    """Losses, learning rate, gradient norm and throughput to the progress bar and TensorBoard;
    a diverged run stops here."""
    losses = {k: float(torch.stack([i[k] for i in infos]).mean()) for k in ("loss", "action_loss", "image_loss")
              if k in infos[0]}
    if not math.isfinite(losses["loss"]):
        raise FloatingPointError(f"loss is {losses['loss']} at step {run.step}; lower lr or check the data")
    bar.set_postfix(loss=f"{losses['loss']:.4f}", samples_per_s=f"{samples_per_s:.1f}")
    if run.writer is not None:
        for k, v in losses.items():
            run.writer.add_scalar(f"train/{k}", v, run.step)
        run.writer.add_scalar("train/lr", run.scheduler.get_last_lr()[0], run.step)
        run.writer.add_scalar("train/grad_norm", float(grad_norm), run.step)
        run.writer.add_scalar("train/samples_per_s", samples_per_s, run.step)


class Throughput:
    """Samples per second between two readings."""

    def __init__(self, samples_per_step: int, step: int):
        self.samples_per_step, self.step, self.time = samples_per_step, step, time.perf_counter()

    def read(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self.step) * self.samples_per_step / max(now - self.time, 1e-9)
        self.step, self.time = step, now
        return rate


# ====================================================================== command line
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uwm-train", description=__doc__.split("\n\nAny TrainConfig")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="training recipe: config/train/<name>.yaml or its name (pretrain, "
                                         "finetune, cotrain); not needed with resume=<run dir>")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="TrainConfig overrides")
    args = parser.parse_args(argv)
    for item in args.overrides:
        if "=" not in item:
            parser.error(f"override {item!r} is not key=value")
    try:
        cfg = load_train_config(args.config, args.overrides)
        if not cfg.resume and args.config is None:
            raise ValueError("--config: a recipe is required (e.g. --config config/train/pretrain.yaml)")
        train(cfg)
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"uwm-train: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("uwm-train: interrupted (checkpoints saved so far are kept)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
