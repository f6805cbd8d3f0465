"""Bad input to uwm-eval-sim and uwm-demo: one clear message listing the valid choices, before any
node starts; a stage that fails stops the demo naming the stage and its log. Plus the pure pieces
of the evaluation (per-step actions of a rollout, the predicted-frames strip)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uwm_core.checkpoint import save_checkpoint
from uwm_core.config import load_model_config
from uwm_core.model import UnifiedWorldModel
from uwm_core.processing import ActionNormalizer
from uwm_core.spatial import apply_delta, delta_between
from uwm_ros.tools import eval_sim
from uwm_ros.tools.rollout_media import prediction_strip
from uwm_ros.tools.rollout_recorder import step_actions

BIN = Path(sys.executable).parent
PERIOD = 100_000_000


def tiny_checkpoint(path, cameras, action_dim=7):
    torch.manual_seed(0)
    model = UnifiedWorldModel(load_model_config("tiny", {"cameras": cameras, "action_dim": action_dim}))
    model.vae.estimate_latent_statistics(torch.rand(4, 3, 32, 32))
    save_checkpoint(path, model, ActionNormalizer.identity(action_dim))
    return str(path)


def run_main(main, argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


def test_unknown_task_lists_the_sim_tasks(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", ["left", "right", "wrist"])
    code, err = run_main(eval_sim.main, ["--checkpoint", checkpoint, "--task", "pour"], capsys)
    assert code == 2
    assert "--task 'pour'" in err and "valid tasks: lift, stack" in err


def test_checkpoint_cameras_the_sim_does_not_render_are_refused_listing_the_valid_ones(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", ["top", "wrist"])
    code, err = run_main(eval_sim.main, ["--checkpoint", checkpoint, "--task", "lift"], capsys)
    assert code == 2
    assert "['top', 'wrist']" in err and "no camera ['top']" in err and "valid cameras: left, right, wrist" in err
    assert len(err.strip().splitlines()) == 1


def test_checkpoint_with_other_actions_or_no_checkpoint_is_refused(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", ["left", "wrist"], action_dim=2)
    code, err = run_main(eval_sim.main, ["--checkpoint", checkpoint], capsys)
    assert code == 2 and "action_dim 2" in err and "7-D actions" in err
    code, err = run_main(eval_sim.main, ["--checkpoint", str(tmp_path / "missing")], capsys)
    assert code == 2 and str(tmp_path / "missing") in err and "does not exist" in err


def test_a_subset_of_the_sim_cameras_is_accepted(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", ["wrist", "left"])
    sim = eval_sim.read_node_params(eval_sim.ros_config_file("sim.yaml"))
    cfg = eval_sim.check_inputs(eval_sim.EvalSettings(checkpoint=checkpoint), sim)
    assert cfg.cameras == ["wrist", "left"]


def test_demo_refuses_an_unknown_task_and_a_directory_it_did_not_create(tmp_path, capsys):
    from uwm_ros.tools import demo

    code, err = run_main(demo.main, ["--task", "pour", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "valid tasks: lift, stack" in err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, err = run_main(demo.main, ["--quick", "--out", str(foreign)], capsys)
    assert code == 2 and "was not created by uwm-demo" in err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_failing_stage_stops_the_demo_naming_the_stage_and_its_log(tmp_path):
    config = tmp_path / "demo.yaml"
    settings = yaml_load(eval_sim.ros_config_file("demo.yaml"))
    settings["demos"] = 1
    settings["train"]["overrides"]["lr"] = -1.0  # uwm-train refuses it
    config.write_text(json.dumps(settings))
    out = tmp_path / "out"
    result = subprocess.run([str(BIN / "uwm-demo"), "--config", str(config), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    log = out / "logs" / "train.log"
    assert "stage 'train' failed" in result.stderr and f"log: {log}" in result.stderr
    assert "lr: must be > 0" in result.stderr and "lr: must be > 0" in log.read_text()
    assert "[3/4] train:" in result.stdout and "[4/4]" not in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and report["failed_stage"] == "train"
    assert set(report["stages"]) == {"record", "convert"} and len(report["artefacts"]["bags"]) == 1


def yaml_load(path):
    import yaml

    return yaml.safe_load(Path(path).read_text())


def test_step_actions_compose_the_deltas_of_each_step_and_hold_the_gripper():
    stamps = [1000 * PERIOD + i * PERIOD for i in range(5)]
    d1, d2 = np.array([0.01, 0, 0, 0, 0, 0.05]), np.array([0, 0.02, 0, 0.03, 0, 0])
    deltas = [(stamps[1], d1), (stamps[1] + PERIOD // 2, d2), (stamps[3], d1)]  # step 2 held: no delta
    grippers = [(stamps[1], 0.0), (stamps[3], 1.0)]
    actions = step_actions(stamps, deltas, grippers)
    position, quat = apply_delta(*apply_delta(np.zeros(3), np.array([0, 0, 0, 1.0]), d1), d2)
    np.testing.assert_allclose(actions[1, :6], delta_between(np.zeros(3), np.array([0, 0, 0, 1.0]), position, quat),
                               atol=1e-6)
    np.testing.assert_allclose(actions[3, :6], d1, atol=1e-6)
    assert not actions[[0, 2, 4], :6].any()
    np.testing.assert_array_equal(actions[:, 6], [0, 0, 0, 1, 1])


def test_prediction_strip_layout():
    rng = np.random.default_rng(0)
    cameras = ["left", "wrist"]
    groups = [{c: rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8) for c in cameras} for _ in range(3)]
    strip = prediction_strip(*groups, cameras, "test")
    # 3 groups of 2 96-px tiles 4 px apart, 16 px between groups; a 20-px caption over 2 rows 4 px apart
    width, height = 3 * (2 * 96 + 4) + 2 * 16, 20 + 2 * 96 + 4
    assert strip.shape[1::-1] == (width, height)
    assert strip[height - 96:, :96].std() > 0  # the wrist row's first (current) tile
    assert (strip[20:, 2 * 96 + 4:2 * 96 + 4 + 16] == 255).all()  # the gap between current and actual


@pytest.mark.parametrize("value, expected", [(None, "null"), ([36, 36], "[36, 36]"), (3.0e-4, "0.0003"),
                                             ("small", "small"), (["/a b/c"], "[/a b/c]")])
def test_train_overrides_are_passed_as_yaml_values(value, expected):
    from omegaconf import OmegaConf

    from uwm_ros.tools.demo import override_value

    assert override_value(value) == expected
    assert OmegaConf.to_container(OmegaConf.from_dotlist([f"k={override_value(value)}"]))["k"] == value
