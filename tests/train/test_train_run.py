"""The README training command on CPU: progress bar, TensorBoard, PNG grids, loadable checkpoints."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from uwm_core import WorldModel

REPO = Path(__file__).resolve().parents[2]


def test_cpu_training_run(tmp_path, world, tiny_args, env):
    args = tiny_args(tmp_path, "demo", num_steps=4, save_every=2, eval_every=2, log_every=2, num_workers=1)
    proc = subprocess.run([str(Path(sys.executable).parent / "uwm-train"), "--config", "config/train/pretrain.yaml", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "4/4" in out and "loss=" in out and "samples_per_s=" in out  # tqdm bar...
    assert re.search(r"<\d\d:\d\d, +\d+\.\d+(s/step|step/s)", out)  # ...with ETA and rate (tqdm's unit flips at 1 step/s)
    assert "step 2: eval/action_mse" in out and "eval/forward_dynamics_mse" in out

    run = tmp_path / "demo"
    scalars = EventAccumulator(str(run / "tb")).Reload().scalars.Keys()
    for tag in ("train/loss", "train/action_loss", "train/image_loss", "train/lr", "train/grad_norm",
                "train/samples_per_s", "eval/action_mse", "eval/forward_dynamics_mse", "eval/obs_sensitivity",
                "eval/obs_feature_spread"):
        assert tag in scalars, tag
    lr = EventAccumulator(str(run / "tb")).Reload().Scalars("train/lr")
    assert [e.step for e in lr] == [2, 4] and all(abs(e.value - 1e-4) < 1e-9 for e in lr)  # constant

    for step in (2, 4):  # forward-dynamics grids: rows of current | true next | predicted next
        grid = np.asarray(Image.open(run / "images" / f"step_{step:07d}.png"))
        rows, cols = 4 * 2, 3 * 2  # 4 samples x 2 cameras; 3 x To frames
        assert grid.shape == (2 + rows * 34, 2 + cols * 34, 3) and grid.std() > 10

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["num_steps"] == 4 and config["model"]["cameras"] == ["top", "wrist"]
    assert config["model"]["action_dim"] == 2 and config["train"]["datasets"] == [world["robot"]]

    state = torch.load(run / "checkpoint" / "training_state.pt", weights_only=False)
    assert state["step"] == 4
    ema = load_file(run / "checkpoint" / "model.safetensors")
    raw = state["model"]
    name = "net.blocks.0.attn.qkv.weight"
    assert not torch.equal(ema[name], raw[name])  # checkpoints hold the EMA weights
    assert float(ema["vae.latent_scale"]) > 0
    # the training state holds what training changes: frozen weights and buffers (the VAE) are in
    # model.safetensors only, not written again with the optimiser state at every save
    trained = {n for n, p in WorldModel.from_checkpoint(run).model.named_parameters() if p.requires_grad}
    assert set(raw) == trained and not [n for n in raw if n.startswith("vae.")]  # run dir: its latest checkpoint
    images = {cam: np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for cam in ("top", "wrist")}
    for ckpt in (run / "checkpoints" / "step_0000002", run / "checkpoints" / "step_0000004", run / "checkpoint"):
        wm = WorldModel.from_checkpoint(ckpt)
        assert wm.cameras == ["top", "wrist"] and wm.action_dim == 2
        actions = wm.predict_actions(images, seed=0)
        assert actions.shape == (8, 2) and np.isfinite(actions).all()
        assert yaml.safe_load((ckpt / "config.yaml").read_text())["train"]["recipe"] == "pretrain"
    assert not (run / "checkpoints" / "step_0000002" / "training_state.pt").exists()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "checkpoints", "config.yaml", "images",
                                                     "learning_curve.png", "tb"]
    curve = np.asarray(Image.open(run / "learning_curve.png"))  # action error and obs sensitivity vs steps
    assert curve.shape[1] > curve.shape[0] > 200 and curve.std() > 10
