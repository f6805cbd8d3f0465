"""A real two-process torchrun run on CPU (DDP over gloo)."""
import json
import subprocess
import sys
from pathlib import Path

from uwm_core import WorldModel
from uwm_core.data import LatentCache, open_dataset


def test_torchrun_two_processes(tmp_path, world, tiny_args, env):
    torchrun = Path(sys.executable).parent / "torchrun"
    args = tiny_args(tmp_path, "ddp", num_steps=3, trace_samples="true", save_every=2)
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "uwm_core.train",
                           "--config", "pretrain", *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "2 process(es) on cpu, 8 samples per step" in log and log.count("training samples") == 1  # rank 0 logs

    run = tmp_path / "ddp"
    traces = [[json.loads(line) for line in (run / "trace" / f"rank{r}.jsonl").read_text().splitlines()]
              for r in range(2)]
    assert [len(t) for t in traces] == [3, 3]
    seen = [set(), set()]
    for step0, step1 in zip(*traces):
        ids0, ids1 = ({tuple(s) for s in t["samples"]} for t in (step0, step1))
        assert len(ids0) == len(ids1) == 4 and not ids0 & ids1  # disjoint shards
        assert step0["params"] == step1["params"]  # DDP keeps the ranks' weights identical
        seen[0] |= ids0
        seen[1] |= ids1
    assert not seen[0] & seen[1]
    # One writer: checkpoints and TensorBoard from rank 0 only.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002", "step_0000003"]
    assert len(list((run / "tb").iterdir())) == 1
    assert WorldModel.from_checkpoint(run / "checkpoint").cameras == ["top", "wrist"]
    # Both ranks built the latent cache (disjoint episodes) before training.
    wm = WorldModel.from_checkpoint(run / "checkpoint")
    assert LatentCache(open_dataset(world["robot"]), wm.model.vae, wm.config.resize_shape).missing() == []
