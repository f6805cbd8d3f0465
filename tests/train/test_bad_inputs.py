"""Bad data in uwm-train: one clear line naming the thing, and no run directory left behind."""
import numpy as np
import pytest

from uwm_core.data import DatasetWriter
from uwm_core.train import main


def run_main(capsys, args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", "pretrain", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def write(path, cameras=("top", "wrist"), fps=10, episodes=1):
    with DatasetWriter(path, cameras=list(cameras), fps=fps, action_dim=2) as w:
        for _ in range(episodes):
            w.add_episode({c: np.zeros((12, 32, 32, 3), np.uint8) for c in cameras}, np.zeros((12, 2)))
    return path


def test_bad_datasets(tmp_path, capsys, world, tiny_args):
    out = tmp_path / "runs"
    args = lambda datasets, **kw: tiny_args(out, "r", datasets=f"[{','.join(map(str, datasets))}]", **kw)
    err = run_main(capsys, args([tmp_path / "missing"]))
    assert err == f"uwm-train: error: {tmp_path / 'missing'}: dataset does not exist"
    write(tmp_path / "empty", episodes=0)
    assert run_main(capsys, args([tmp_path / "empty"])).endswith("empty: dataset has no episodes")
    other_cams = write(tmp_path / "cams", cameras=("top", "side"))
    err = run_main(capsys, args([world["robot"], other_cams]))
    assert err == (f"uwm-train: error: datasets disagree on cameras: {world['robot']} has ['top', 'wrist'], "
                   f"{other_cams} has ['top', 'side']")
    other_fps = write(tmp_path / "fps", fps=15)
    err = run_main(capsys, args([world["robot"]], video_datasets=f"[{other_fps}]"))
    assert err == f"uwm-train: error: datasets disagree on fps: {world['robot']} has 10, {other_fps} has 15"
    err = run_main(capsys, args([world["robot"]], batch_size=1000))
    assert "batch_size: 1000 x 1 process(es) needs at least 1000 training samples" in err
    err = run_main(capsys, args([world["robot"]], video_datasets=f"[{world['video']}]", **{"model.variant": "dp"}))
    assert err == ("uwm-train: error: video_datasets: the dp variant has no image diffusion and cannot learn "
                   "from action-free video")
    assert not out.exists()  # nothing a later run could mistake for a run
