"""`uwm-demo --quick` end to end, as a user runs it (a subprocess on a fresh output directory):
real sim, scripted expert and recorder over DDS, real bags, real conversion, a real (short)
training run and the real policy node against the sim. Every artefact the report names is
opened with the library a user would use, and the report's numbers are checked against them."""
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from ros_domain import claimed_domain
from rosbags.rosbag2 import Reader

from uwm_core import WorldModel
from uwm_core.data import open_dataset

BIN = Path(sys.executable).parent
CAMERA_TOPICS = ["/cameras/left/image_raw", "/cameras/right/image_raw", "/cameras/wrist/image_raw"]
QUICK_TIMEOUT_S = 900  # about 2 minutes on 2 idle cores; generous for a busy machine


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "quick"
    with claimed_domain():
        result = subprocess.run([str(BIN / "uwm-demo"), "--quick", "--out", str(out)], capture_output=True,
                                text=True, timeout=QUICK_TIMEOUT_S)
    assert result.returncode == 0, f"uwm-demo --quick failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    report = json.loads((out / "report.json").read_text())
    return out, report, result.stdout


def test_prints_progress_per_stage_and_the_report(quick_demo):
    out, report, stdout = quick_demo
    for number, stage in enumerate(("record", "convert", "train", "evaluate"), 1):
        assert f"[{number}/4] {stage}:" in stdout
        assert f"{stage} done in" in stdout
    assert "# uwm-demo report" in stdout and "**Success:" in stdout
    assert (out / "report.md").read_text() in stdout  # the printed report is the written one


def test_bags_are_readable_rosbags_of_successful_expert_demos(quick_demo):
    _, report, _ = quick_demo
    record = report["stages"]["record"]
    bags = report["artefacts"]["bags"]
    assert record["episodes"] == 2 == len(bags) == len(record["bags"])
    for bag in bags:
        with Reader(bag) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            for topic in CAMERA_TOPICS:
                assert topics[topic] == "sensor_msgs/msg/Image"
            assert topics["/sim_expert/delta_ee"] == "geometry_msgs/msg/TwistStamped"
            counts = {topic: sum(1 for _ in reader.messages([c for c in reader.connections if c.topic == topic]))
                      for topic in ("/sim_expert/delta_ee", CAMERA_TOPICS[0])}
            # every step of the expert's episode: about 25 steps to lift, 3 more holding it
            assert 20 <= counts["/sim_expert/delta_ee"] <= 60 and counts[CAMERA_TOPICS[0]] >= 20
        metadata = (Path(bag) / "metadata.yaml").read_text()
        assert "lift the red cube" in metadata and "uwm.outcome: success" in metadata


def test_dataset_holds_the_converted_demos(quick_demo):
    _, report, _ = quick_demo
    convert = report["stages"]["convert"]
    ds = open_dataset(report["artefacts"]["dataset"])
    assert ds.num_episodes == convert["episodes"] == report["stages"]["record"]["successes"]
    assert list(ds.cameras) == ["left", "right", "wrist"] and ds.action_dim == 7 and ds.fps == 10
    assert int(sum(ds.episode_lengths)) == convert["steps"]
    episode = ds.episode(0)
    assert episode.task == "lift the red cube"
    assert episode.frames["wrist"].shape[1:] == (96, 96, 3)
    actions = episode.actions
    assert np.isfinite(actions).all()
    # the expert moves at most 2 cm per step, closes the gripper once and lifts the cube
    assert np.abs(actions[:, :3]).max() <= 0.02 + 1e-6 and np.abs(actions[:, :3]).max() > 0.005
    assert actions[0, 6] == 0.0 and actions[-1, 6] == 1.0
    assert actions[-8:, 2].sum() > 0.01  # the last steps go up
    # proprioception: the gripper command in force at each step is the previous step's command,
    # and the measured hand rises by about what the last steps commanded
    assert ds.state_dim == 10 and episode.state.shape == (len(actions), 10)
    np.testing.assert_array_equal(episode.state[1:, 9], actions[:-1, 6])
    assert episode.state[0, 9] == 0.0
    assert episode.state[-1, 2] - episode.state[-8, 2] > 0.5 * actions[-8:-1, 2].sum()


def test_checkpoint_loads_and_acts_on_dataset_frames(quick_demo):
    _, report, _ = quick_demo
    wm = WorldModel.from_checkpoint(report["artefacts"]["checkpoint"])
    assert wm.cameras == ["left", "right", "wrist"] and wm.image_size == 32 and wm.action_dim == 7
    ds = open_dataset(report["artefacts"]["dataset"])
    images = {c: ds.frames(0, c, [0, 1]) for c in wm.cameras}
    state = ds.state(0)[[0, 1]]
    actions = wm.predict_actions(images, seed=0, state=state)
    assert actions.shape == (wm.action_horizon, 7) and np.isfinite(actions).all()
    np.testing.assert_array_equal(actions, wm.predict_actions(images, seed=0, state=state))
    with pytest.raises(ValueError, match="proprioceptive state"):
        wm.predict_actions(images, seed=0)  # the demo's model is trained with state: it is required


def test_video_decodes_with_the_reported_number_of_frames(quick_demo):
    _, report, _ = quick_demo
    video = report["artefacts"]["video"]
    evaluation = json.loads(Path(report["artefacts"]["eval_report"]).read_text())
    with av.open(video) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == evaluation["artefacts"]["video"]["frames"] > 10
    # three 96 px cameras side by side at twice their size, under a caption band
    assert frames[0].shape == (2 * 96 + 20, 3 * 2 * 96, 3)
    assert frames[0][20:].std() > 10  # a rendered scene, not a blank frame


def test_predicted_frames_png_has_the_strip_layout(quick_demo):
    _, report, _ = quick_demo
    evaluation = json.loads(Path(report["artefacts"]["eval_report"]).read_text())
    strip = evaluation["artefacts"]["predicted_frames_png"]
    image = np.asarray(Image.open(report["artefacts"]["predicted_frames_png"]).convert("RGB"))
    # 3 groups of 2 96-px tiles 4 px apart, 16 px between groups; a 20-px caption over 3 camera rows 4 px apart
    assert (image.shape[1], image.shape[0]) == tuple(strip["size"]) == (3 * (2 * 96 + 4) + 2 * 16, 20 + 3 * 96 + 2 * 4)
    assert strip["mode"] == "forward_dynamics"
    assert strip["predicted_steps"][0] == strip["current_step"] + 16  # the frames after one 16-action chunk
    assert 0.0 < strip["mse"] < 1.0
    assert image.std() > 10


def test_report_numbers_are_consistent(quick_demo):
    out, report, _ = quick_demo
    assert report["status"] == "ok"
    stages = report["stages"]
    evaluation = stages["evaluate"]
    eval_report = json.loads(Path(report["artefacts"]["eval_report"]).read_text())
    assert evaluation["episodes"] == 1 == len(eval_report["episode_results"])
    assert evaluation["successes"] == sum(e["success"] for e in eval_report["episode_results"])
    assert evaluation["success_rate"] == evaluation["successes"] / evaluation["episodes"]
    low, high = evaluation["wilson_95"]
    assert low <= evaluation["success_rate"] <= high and high - low > 0.5  # one episode says little
    lengths = [e["steps"] for e in eval_report["episode_results"]]
    assert evaluation["mean_episode_length"] == pytest.approx(np.mean(lengths))
    assert all(0 < n <= evaluation["max_steps"] for n in lengths)
    assert eval_report["inference_latency"]["wall_clock_in_process"]["median_s"] > 0
    assert stages["train"]["steps"] == 6 and Path(stages["train"]["run_dir"], "tb").is_dir()
    seconds = [stages[s]["seconds"] for s in ("record", "convert", "train", "evaluate")]
    assert all(s > 0 for s in seconds) and sum(seconds) <= report["total_seconds"] + 1
    for name, path in report["artefacts"].items():
        paths = path if isinstance(path, list) else [path]
        assert paths and all(Path(p).exists() for p in paths), f"artefact {name} is missing: {path}"
        assert all(Path(p).resolve().is_relative_to(out.resolve()) for p in paths), f"{name} outside --out"
    markdown = (out / "report.md").read_text()
    assert f"{evaluation['successes']}/1" in markdown and report["artefacts"]["checkpoint"] in markdown
