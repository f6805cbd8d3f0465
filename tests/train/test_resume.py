"""Ctrl-C saves a checkpoint; resume=<run dir> continues exactly like an uninterrupted run."""
import json
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from uwm_core.durable import recover_staging, replace_file, staging_path
from uwm_core.train import load_train_config, train

TRAIN = [sys.executable, "-m", "uwm_core.train", "--config", "pretrain"]


def steps_done(run) -> int:
    trace = run / "trace" / "rank0.jsonl"
    return len(trace.read_text().splitlines()) if trace.exists() else 0


def last_traced_step(run) -> int:
    return json.loads((run / "trace" / "rank0.jsonl").read_text().splitlines()[-1])["step"]


def test_interrupt_and_resume_equals_uninterrupted_run(tmp_path, tiny_args, env):
    # num_workers=1: a sample's augmentation depends on (seed, epoch, index), not on the worker.
    common = dict(trace_samples="true", num_workers=1, batch_size=4, grad_accum=2)
    interrupted = subprocess.Popen([*TRAIN, *tiny_args(tmp_path, "interrupted", num_steps=1000, **common)],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "interrupted"
    try:
        deadline = time.monotonic() + 400
        while steps_done(run) < 2:
            assert interrupted.poll() is None, interrupted.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        interrupted.send_signal(signal.SIGINT)  # Ctrl-C
        log, _ = interrupted.communicate(timeout=300)
    finally:
        interrupted.kill()
    assert interrupted.returncode == 0, log[-3000:]
    assert f"continue with: uwm-train resume={run}" in log
    stopped = torch.load(run / "checkpoint" / "training_state.pt", weights_only=False)["step"]
    assert 2 <= stopped < 1000 and stopped == steps_done(run)
    total = stopped + 3

    # Resume and the uninterrupted reference run in this process (one thread, as the subprocess).
    train(load_train_config(None, [f"resume={run}", f"num_steps={total}"]))
    train(load_train_config("pretrain", tiny_args(tmp_path, "straight", num_steps=total, **common)))

    # The same samples in the same order, across the interruption.
    def trace(name):
        return [json.loads(line) for line in (tmp_path / name / "trace" / "rank0.jsonl").read_text().splitlines()]
    assert [t["samples"] for t in trace("interrupted")] == [t["samples"] for t in trace("straight")]
    # Bitwise equal weights, EMA, optimiser state: CPU kernels are deterministic for equal inputs and
    # thread counts, the diffusion noise comes from the restored RNG, and the augmentation from the
    # restored sampler position. Any missing piece of state would change the numbers.
    a = torch.load(run / "checkpoint" / "training_state.pt", weights_only=False)
    b = torch.load(tmp_path / "straight" / "checkpoint" / "training_state.pt", weights_only=False)
    assert a["step"] == b["step"] == total and (a["epoch"], a["batch_in_epoch"]) == (b["epoch"], b["batch_in_epoch"])
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
    ema_a = load_file(run / "checkpoint" / "model.safetensors")
    ema_b = load_file(tmp_path / "straight" / "checkpoint" / "model.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_sigkill_at_random_moments_always_resumes(tmp_path, tiny_args, env):
    """SIGKILL a real uwm-train that saves at every step, at random moments (mostly inside a save),
    again and again: after every kill the run resumes from its last completed step, and what the
    interrupted saves left beside the checkpoint never accumulates."""
    import numpy as np

    rng = np.random.default_rng(0)
    run, total, kills = tmp_path / "killed", 400, 10
    args = tiny_args(tmp_path, "killed", num_steps=total, save_every=1, trace_samples="true")
    last_step, leftovers = 0, []
    for kill in range(kills):
        command = [*TRAIN, *args] if kill == 0 else [*TRAIN[:3], f"resume={run}"]
        traced = steps_done(run)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 300
            while steps_done(run) < traced + 2:  # this process took two steps: its first save is done
                assert proc.poll() is None, proc.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "training did not start"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            proc.kill()
            proc.stdout.close()
        state = torch.load(run / "checkpoint" / "training_state.pt", weights_only=False)
        # never behind the last save that finished before the kill; at most the step in flight lost
        assert last_step + 1 <= state["step"] <= last_traced_step(run), (last_step, state["step"], last_traced_step(run))
        assert not [k for k in state["model"] if k.startswith("vae.")]  # frozen weights: in model.safetensors
        last_step = state["step"]
        leftovers.append(sorted(p.name for where in (run, run / "checkpoints") for p in where.iterdir()
                                if p.name.startswith(".")))
        assert len(leftovers[-1]) <= 2, leftovers  # one save in flight: its staging copies, no more
    finished = subprocess.run([*TRAIN[:3], f"resume={run}", f"num_steps={last_step + 2}"], env=env,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "cleared what an interrupted save left" in finished.stdout + finished.stderr or not leftovers[-1]
    assert torch.load(run / "checkpoint" / "training_state.pt", weights_only=False)["step"] == last_step + 2
    assert not [p for where in (run, run / "checkpoints") for p in where.iterdir() if p.name.startswith(".")]


def test_resume_clears_what_a_killed_file_replacement_left(tmp_path):
    target = replace_file(tmp_path / "config.yaml", "a: 1\n")
    leftover = staging_path(target)
    leftover.write_text("a: 2")  # a kill inside replace_file, before its rename
    assert recover_staging(tmp_path) == [f"removed {leftover.name}"]
    assert target.read_text() == "a: 1\n" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
