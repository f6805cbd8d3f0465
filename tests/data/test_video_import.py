"""uwm-import-video: real mp4/webm files -> action-free episodes at the dataset frame rate."""
import logging

import av
import numpy as np
import pytest

from uwm_core.data import DatasetWriter, open_dataset
from uwm_core.data.video_import import import_videos, main


def write_video(path, codec, frames, rate, size=(48, 64)):
    """Frame i: red = 8 i (a time code), a bright vertical line at x = 2 i."""
    H, W = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(frames):
            img = np.zeros((H, W, 3), np.uint8)
            img[..., 0] = (8 * i) % 256
            img[:, (2 * i) % W] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "pour_water.mp4", "libx264", 60, 30)  # 2 s at 30 fps
    (folder / "more").mkdir()
    write_video(folder / "more" / "wave.webm", "libvpx", 25, 25, size=(40, 40))  # 1 s at 25 fps, square
    (folder / "notes.txt").write_text("not a video")
    return folder


def robot_dataset(path):
    with DatasetWriter(path, cameras=["left", "right", "wrist"], fps=10, action_dim=7) as w:
        w.add_episode({c: np.zeros((3, 24, 32, 3), np.uint8) for c in ("left", "right", "wrist")}, np.zeros((3, 7)))
    return path


def test_import_resamples_and_imputes_views(videos, tmp_path, capsys):
    robot = robot_dataset(tmp_path / "robot")
    main([str(videos), "--out", str(tmp_path / "video"), "--like", str(robot), "--seed", "3"])
    assert "imported 2 episode(s) from 2 video(s)" in capsys.readouterr().out
    ds = open_dataset(tmp_path / "video")
    assert (ds.cameras, ds.fps, ds.action_dim) == (["left", "right", "wrist"], 10, 7)  # like the robot data
    assert ds.has_actions.tolist() == [False, False]
    assert ds.episode_lengths.tolist() == [10, 20]  # sorted paths: more/wave.webm (1 s), pour_water.mp4 (2 s)
    ep = ds.episode(1)
    assert ep.task == "pour water" and ep.metadata["source"].endswith("pour_water.mp4")
    assert all(f.shape == (20, 24, 32, 3) for f in ep.frames.values())  # the robot data's frame size
    # 10 fps from 30 fps: output frame k is source frame 3k (red channel = 8 x source index).
    red = ep.frames["left"][..., 0].astype(float).mean(axis=(1, 2))
    np.testing.assert_allclose(red[:10], 24 * np.arange(10), atol=6)
    # Views are different random crops of the same video (paper A-A3), fixed over the episode.
    crops = ep.metadata["crops"]
    assert len({tuple(c) for c in crops.values()}) == 3
    assert not np.array_equal(ep.frames["left"], ep.frames["right"])
    # Running again imports nothing new.
    main([str(videos), "--out", str(tmp_path / "video"), "--like", str(robot)])
    assert "imported 0 episode(s)" in capsys.readouterr().out and open_dataset(tmp_path / "video").num_episodes == 2


def test_long_videos_are_split(videos, tmp_path):
    report = import_videos([videos / "pour_water.mp4"], tmp_path / "v", ["top"], 10, (16, 16), action_dim=2,
                           max_frames=8, progress=False)
    ds = open_dataset(tmp_path / "v")
    assert report.episodes == 3 and ds.episode_lengths.tolist() == [8, 8, 4]
    assert [ds.metadata(i)["clip"] for i in range(3)] == [0, 1, 2]


def test_corrupt_files_are_skipped_and_counted(videos, tmp_path, caplog, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    truncated = (videos / "pour_water.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(truncated[:300])
    mixed = [videos / "more" / "wave.webm", bad]
    with caplog.at_level(logging.WARNING, logger="uwm-import-video"):
        main([*map(str, mixed), "--out", str(tmp_path / "v"), "--cameras", "top", "--fps", "10", "--size", "16", "16"])
    out = capsys.readouterr().out
    assert "imported 1 episode(s) from 1 video(s)" in out and "skipped 2 unreadable file(s)" in out
    warned = [r.getMessage() for r in caplog.records]
    assert any("garbage.mp4" in w for w in warned) and any("truncated.mp4" in w for w in warned)
    assert open_dataset(tmp_path / "v").num_episodes == 1


def test_nothing_usable_fails_naming_the_file_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "garbage.webm").write_bytes(b"\x1aE\xdf\xa3" + bytes(3000))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "garbage.webm"), "--out", str(tmp_path / "v"), "--cameras", "top", "--fps", "10"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar: one line
    assert err.startswith("uwm-import-video: error: no usable video among 1 file(s)") and "garbage.webm" in err
    assert not (tmp_path / "v").exists()
    with pytest.raises(FileNotFoundError, match="missing.mp4: no such video"):
        import_videos([tmp_path / "missing.mp4"], tmp_path / "v", ["top"], 10, (8, 8))
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="no video files"):
        import_videos([tmp_path / "sub"], tmp_path / "v", ["top"], 10, (8, 8))


def test_appending_requires_matching_cameras(videos, tmp_path):
    robot = robot_dataset(tmp_path / "robot")
    with pytest.raises(ValueError, match=r"cameras=\['top'\].*has cameras=\['left', 'right', 'wrist'\]"):
        import_videos([videos / "more"], robot, ["top"], 10, (8, 8), progress=False)
    assert open_dataset(robot).num_episodes == 1
