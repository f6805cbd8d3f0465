"""Training samples: window index semantics, edge padding, crops, jitter, sampler, normaliser."""
import numpy as np
import pytest
import torch

from uwm_core.data import (ColorJitter, DatasetWriter, EpisodeSamples, Mixture, SampleSpec, ShardedSampler, Window,
                           action_normalizer, open_dataset, split_episodes)
from uwm_core.processing import ActionNormalizer

TO, TA, EXEC = 2, 8, 4


def coded_dataset(path, lengths=(12, 3)):
    """Frames whose blue channel is 10 t, red/green encode x/y; actions[t] = (t, 100 + t); dim 1 absolute."""
    yy, xx = np.mgrid[0:36, 0:36]
    with DatasetWriter(path, cameras=["top", "wrist"], fps=10, action_dim=2, absolute_action_dims=(1,)) as w:
        for T in lengths:
            frames = np.zeros((T, 36, 36, 3), np.uint8)
            frames[..., 0], frames[..., 1] = xx * 7, yy * 7
            frames[..., 2] = (10 * np.arange(T))[:, None, None]
            actions = np.stack([np.arange(T), 100 + np.arange(T)], axis=1).astype(np.float32)
            w.add_episode({"top": frames, "wrist": frames.copy()}, actions)
    return open_dataset(path)


def spec(jitter=None):
    return SampleSpec(Window(TO, TA, EXEC), ("top", "wrist"), 32, (36, 36), 4, jitter)


def blue(frames):
    """The per-frame time code (B channel / 10) of (..., 3, S, S) float images."""
    return (frames[..., 2, 0, 0] * 255 / 10).round().int().tolist()


def test_window_semantics_and_edge_padding(tmp_path):
    ds = coded_dataset(tmp_path / "d")
    samples = EpisodeSamples(ds, [0, 1], spec(), ActionNormalizer.identity(2))
    assert Window(2, 16, 8).length == 19  # the reference's To + Ta + To - 1
    # T - execute_steps + 1 samples per episode (t = 0 .. T - 4), at least one for a short episode.
    assert len(samples) == (12 - EXEC + 1) + 1

    first = samples[0]  # t = 0: the frame before the start repeats the first frame
    assert blue(first["obs"][0]) == [0, 0]
    assert first["actions"].tolist() == [[t, 100 + t] for t in range(8)]
    assert blue(first["next_obs"][0]) == [8, 9]  # frames t+Ta, t+Ta+1
    assert first["sample_id"].tolist() == [0, 0, 0] and bool(first["has_actions"])

    middle = samples[3]  # t = 3: current t-1, t; actions a_t .. a_{t+7}; next t+8, t+9
    assert blue(middle["obs"][1]) == [2, 3] and blue(middle["next_obs"][1]) == [11, 11]
    assert middle["actions"][:, 0].tolist() == list(range(3, 11))

    last = samples[8]  # t = 8 = T - execute_steps: 4 real actions, then hold actions
    assert blue(last["obs"][0]) == [7, 8] and blue(last["next_obs"][0]) == [11, 11]
    assert last["actions"].tolist() == [[8, 108], [9, 109], [10, 110], [11, 111]] + [[0, 111]] * 4

    short = samples[9]  # the 3-frame episode
    assert short["sample_id"].tolist() == [0, 1, 0]
    assert blue(short["obs"][0]) == [0, 0] and blue(short["next_obs"][0]) == [2, 2]
    assert short["actions"].tolist() == [[0, 100], [1, 101], [2, 102]] + [[0, 102]] * 5


def test_random_crops_are_shared_by_current_and_next_frames(tmp_path):
    ds = coded_dataset(tmp_path / "d")
    samples = EpisodeSamples(ds, [0], spec(), ActionNormalizer.identity(2))
    offsets = set()
    for index in range(len(samples)):
        s = samples[(index, (7, 0))]
        for v in range(2):
            frames = torch.cat([s["obs"][v], s["next_obs"][v]])  # (2 To, 3, S, S)
            left = round(float(frames[0, 0, 0, 0]) * 255 / 7)
            top = round(float(frames[0, 1, 0, 0]) * 255 / 7)
            assert top % 4 == 0 and left % 4 == 0 and 0 <= top <= 4 and 0 <= left <= 4
            assert torch.equal(frames[:, :2], frames[:1, :2].expand_as(frames[:, :2]))  # same crop in time
            offsets.add((v, top, left))
        assert samples[(index, (7, 0))]["obs"].equal(s["obs"])  # the key fixes the augmentation
    assert len(offsets) > 4  # crops vary between samples and cameras
    centre = samples[0]  # evaluation: the deployment centre crop
    assert round(float(centre["obs"][0, 0, 0, 0, 0]) * 255 / 7) == 2


def test_color_jitter_is_consistent_per_camera(tmp_path):
    with DatasetWriter(tmp_path / "d", cameras=["top", "wrist"], fps=10, action_dim=2) as w:
        frame = np.random.default_rng(0).integers(30, 220, (1, 36, 36, 3), dtype=np.uint8)
        w.add_episode({"top": np.repeat(frame, 20, 0), "wrist": np.repeat(frame, 20, 0)}, np.zeros((20, 2)))
    ds = open_dataset(tmp_path / "d")
    plain = EpisodeSamples(ds, [0], SampleSpec(Window(TO, TA, EXEC), ("top", "wrist"), 36, (36, 36), 4),
                           ActionNormalizer.identity(2))
    jittered = EpisodeSamples(ds, [0], SampleSpec(Window(TO, TA, EXEC), ("top", "wrist"), 36, (36, 36), 4,
                                                  ColorJitter()), ActionNormalizer.identity(2))
    s, reference = jittered[(2, (0, 0))], plain[2]
    for v in range(2):
        frames = torch.cat([s["obs"][v], s["next_obs"][v]])
        assert torch.allclose(frames, frames[:1].expand_as(frames))  # one draw for current and next frames
        assert not torch.allclose(frames[0], reference["obs"][v, 0], atol=1e-3)
    assert not torch.allclose(s["obs"][0], s["obs"][1], atol=1e-3)  # cameras get their own draws


def test_action_free_episodes_and_mixture(tmp_path):
    robot = coded_dataset(tmp_path / "robot", lengths=(6,))
    with DatasetWriter(tmp_path / "video", cameras=["wrist", "top"], fps=10, action_dim=2) as w:
        w.add_episode({c: np.full((7, 36, 36, 3), 50, np.uint8) for c in ("top", "wrist")}, None)
    video = open_dataset(tmp_path / "video")
    normalizer = action_normalizer([robot])
    mix = Mixture([EpisodeSamples(robot, [0], spec(), normalizer, dataset_id=0),
                   EpisodeSamples(video, [0], spec(), normalizer, dataset_id=1)])
    assert len(mix) == 3 + 4 and mix.has_actions.tolist() == [True] * 3 + [False] * 4
    s = mix[(5, (0, 0))]
    assert s["sample_id"].tolist() == [1, 0, 2] and not bool(s["has_actions"])
    assert torch.equal(s["actions"], torch.zeros(TA, 2))  # placeholders: the model imputes noise
    assert torch.allclose(s["obs"], torch.full_like(s["obs"], 50 / 255))
    robot_sample = mix[(1, (0, 0))]
    assert robot_sample["actions"].abs().max() <= 1 and bool(robot_sample["has_actions"])


def test_normaliser_from_stats_keeps_hold_actions_in_range(tmp_path):
    ds = coded_dataset(tmp_path / "d", lengths=(5, 4))  # dim 0 in [0, 4], absolute dim 1 in [100, 104]
    with DatasetWriter(tmp_path / "e", cameras=["top", "wrist"], fps=10, action_dim=2, absolute_action_dims=(1,)) as w:
        w.add_episode({c: np.zeros((3, 8, 8, 3), np.uint8) for c in ("top", "wrist")},
                      np.array([[2, 98], [3, 99], [6, 99]], np.float32))
    normalizer = action_normalizer([ds, open_dataset(tmp_path / "e")])
    assert normalizer.low.tolist() == [0, 98] and normalizer.high.tolist() == [6, 104]
    with DatasetWriter(tmp_path / "f", cameras=["c"], fps=10, action_dim=1) as w:  # all-positive deltas
        w.add_episode({"c": np.zeros((2, 8, 8, 3), np.uint8)}, np.array([[0.5], [0.7]], np.float32))
    assert action_normalizer([open_dataset(tmp_path / "f")]).low.tolist() == [0.0]  # hold (0) stays in range
    with pytest.raises(ValueError, match="no episode with actions"):
        with DatasetWriter(tmp_path / "g", cameras=["c"], fps=10, action_dim=1) as w:
            w.add_episode({"c": np.zeros((2, 8, 8, 3), np.uint8)}, None)
        action_normalizer([open_dataset(tmp_path / "g")])


def test_sharded_sampler_disjoint_and_resumable():
    n, batch, world = 103, 4, 3
    samplers = [ShardedSampler(n, batch, rank, world, seed=5) for rank in range(world)]
    for epoch in (0, 1):
        shards = []
        for s in samplers:
            s.set_position(epoch, 0)
            items = list(s)
            assert all(key == (5, epoch) for _, key in items)
            shards.append([i for i, _ in items])
        assert all(len(x) == (n // world) // batch * batch for x in shards)
        flat = sum(shards, [])
        assert len(set(flat)) == len(flat) and set(flat) <= set(range(n))  # disjoint across ranks
    s = samplers[1]
    s.set_position(1, 0)
    full = list(s)
    s.set_position(1, 2)  # resume after two batches of epoch 1
    assert list(s) == full[2 * batch:] and len(s) == len(full) - 2 * batch
    s.set_position(0, 0)
    assert [i for i, _ in s] != [i for i, _ in full]  # epochs are reshuffled
    with pytest.raises(ValueError, match=r"batch_size: 40 x 3 process\(es\) needs at least 120"):
        ShardedSampler(103, 40, 0, 3)


def test_split_holds_out_labelled_episodes(tmp_path):
    with DatasetWriter(tmp_path / "d", cameras=["c"], fps=10, action_dim=1) as w:
        for i in range(10):
            w.add_episode({"c": np.zeros((2, 4, 4, 3), np.uint8)}, np.zeros((2, 1)) if i % 2 == 0 else None)
    ds = open_dataset(tmp_path / "d")
    train, held_out = split_episodes(ds, 0.2, seed=0)
    assert len(held_out) == 1 and held_out[0] % 2 == 0  # round(0.2 x 5 labelled episodes)
    assert sorted(train + held_out) == list(range(10))
    assert split_episodes(ds, 0.2, seed=0) == (train, held_out)
    assert split_episodes(ds, 0.0)[1] == []
