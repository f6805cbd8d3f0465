"""Bad bags: each gives a clear message naming bag, topic and time; without --skip-bad the dataset
is left exactly as it was, with --skip-bad the good bags are converted; nothing half-written."""
from __future__ import annotations

import numpy as np
import yaml
from bagfactory import BagBuilder
from test_bag_convert import DELTA, GRIPPER, LEFT, MS, T0, WRIST, camera, commands

from uwm_core.data import open_dataset
from uwm_teleop.bag2dataset import main
from uwm_teleop.bag_reading import find_bags


def good_bag(path, seed):
    rng = np.random.default_rng(seed)
    bag = BagBuilder(path)
    camera(bag, LEFT, 20, 50 * MS, rng)
    camera(bag, WRIST, 20, 50 * MS, rng)
    commands(bag, 8, rng)
    return bag


def make_bad_bags(root):
    """name -> what its error message must mention."""
    (root / "notes.txt").write_text("not a bag")
    expected = {"notes.txt": ["is not a rosbag2"]}

    bag = BagBuilder(root / "no_wrist")  # a configured camera topic is missing
    rng = np.random.default_rng(5)
    camera(bag, LEFT, 20, 50 * MS, rng)
    commands(bag, 8, rng)
    bag.close()
    expected["no_wrist"] = [WRIST, "camera 'wrist' topic is not in the bag"]

    bag = good_bag(root / "yuv", 6)  # an encoding we cannot decode
    bag.items = [item for item in bag.items if item[1] != LEFT]
    for i in range(20):
        bag.raw_image(LEFT, T0 + i * 50 * MS, "yuv422", 12, 16, 32, bytes(12 * 32))
    bag.close()
    expected["yuv"] = [LEFT, "unsupported image encoding 'yuv422'", "s into the bag (stamp 1700000000."]

    good_bag(root / "truncated", 7).close()  # a finished bag cut short (e.g. an interrupted copy)
    mcap = root / "truncated" / "truncated.mcap"
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    expected["truncated"] = ["truncated", "cannot be read"]

    bag = good_bag(root / "backwards", 8)  # the wrist camera's stamps go back in time
    bag.image(WRIST, T0 + 420 * MS, np.zeros((12, 16, 3), np.uint8), log_ns=T0 + 990 * MS)
    bag.close()
    expected["backwards"] = [WRIST, "stamps go backwards", "0.420 s into the bag (stamp 1700000000.420000000)"]
    return expected


def test_bad_bags_named_dataset_unchanged_or_skip_bad(tmp_path, capsys):
    cfg = tmp_path / "convert.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": {"left": LEFT, "wrist": WRIST}, "image_size": None,
                                   "delta_topic": DELTA, "gripper_topic": GRIPPER, "state": False}))
    out = tmp_path / "dataset"
    good_bag(tmp_path / "first", 1).close()
    assert main([str(tmp_path / "first"), "--out", str(out), "--config", str(cfg)]) == 0
    capsys.readouterr()
    snapshot = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    bags = tmp_path / "bags"
    bags.mkdir()
    good_bag(bags / "a_good", 2).close()
    expected = make_bad_bags(bags)
    good_bag(bags / "z_good", 3).close()

    for name, needles in expected.items():  # each alone: a clear message, exit 1, dataset untouched
        assert main([str(bags / name), "--out", str(out), "--config", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert str(bags / name) in err and "left unchanged" in err, err
        for needle in needles:
            assert needle in err, f"{name}: {needle!r} not in:\n{err}"
    assert main([str(bags), "--out", str(out), "--config", str(cfg)]) == 1  # the good ones neither
    capsys.readouterr()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bags", "convert.yaml", "dataset", "first"]

    # --skip-bad converts the good ones, and still exits 1: bags were refused
    assert main([str(bags), "--out", str(out), "--config", str(cfg), "--skip-bad"]) == 1
    printed = capsys.readouterr()
    assert "2 bag(s) converted" in printed.out and "4 bad" in printed.out, printed.out  # loose non-bag files are ignored
    assert "4 bag(s) refused" in printed.err
    ds = open_dataset(out)
    assert ds.num_episodes == 3
    assert [ds.metadata(i)["source"].split("/")[-1] for i in range(3)] == ["first", "a_good", "z_good"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bags", "convert.yaml", "dataset", "first"]


def test_finding_bags_and_unfinished_recordings(tmp_path):
    good_bag(tmp_path / "bags" / "done", 1).close()
    killed = tmp_path / "bags" / "rosbag2_2025_01_01-10_00_00"  # `ros2 bag record` killed: no metadata.yaml
    killed.mkdir()
    (killed / f"{killed.name}_0.mcap").write_bytes(b"\x89MCAP0\r\n")
    partial = tmp_path / "bags" / "episode_0007_20250101-100000.partial"
    partial.mkdir()
    (tmp_path / "empty").mkdir()
    found = {c.path.name: c for c in find_bags([tmp_path / "bags", tmp_path / "bags" / "done" / "done.mcap",
                                                tmp_path / "empty", tmp_path / "missing"])}
    assert set(found) == {"done", killed.name, partial.name, "empty", "missing"}  # done found once
    assert found["done"].incomplete is None and found["done"].problem is None
    assert "metadata.yaml missing" in found[killed.name].incomplete
    assert ".partial" in found[partial.name].incomplete
    assert "contains none" in found["empty"].problem and "does not exist" in found["missing"].problem
