"""The latent cache: keyed by VAE and resolution, resumable, cropped consistently with the pixels."""
import os

import numpy as np
import pytest
import torch

from uwm_core.config import load_model_config
from uwm_core.data import DatasetError, EpisodeSamples, LatentCache, action_normalizer, open_dataset, sample_spec
from uwm_core.model import UnifiedWorldModel
from uwm_core.processing import crop, frames_to_float, resize_images
from doubles.synthetic_world import write_synthetic_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = write_synthetic_dataset(tmp_path_factory.mktemp("cache") / "synthetic", 3, seed=0, max_steps=14)
    torch.manual_seed(0)
    model = UnifiedWorldModel(load_model_config("tiny"))
    model.vae.estimate_latent_statistics(torch.rand(8, 3, 32, 32))
    return open_dataset(path), model


def test_key_follows_vae_weights_and_resolution(world, tmp_path):
    ds, model = world
    cache = LatentCache(ds, model.vae, [36, 36], tmp_path)
    assert cache.root.parent.parent == tmp_path
    assert LatentCache(ds, model.vae, [36, 36], tmp_path).root == cache.root  # same VAE: same cache
    assert LatentCache(ds, model.vae, [40, 40], tmp_path).root != cache.root
    other = UnifiedWorldModel(load_model_config("tiny"))
    other.vae.load_state_dict(model.vae.state_dict())
    assert LatentCache(ds, other.vae, [36, 36], tmp_path).root == cache.root
    with torch.no_grad():
        next(other.vae.parameters())[0].add_(1e-3)  # e.g. a VAE fitted for another run
    assert LatentCache(ds, other.vae, [36, 36], tmp_path).root != cache.root
    other.vae.load_state_dict(model.vae.state_dict())
    other.vae.latent_scale.mul_(2)  # the scaling buffers are part of the identity
    assert LatentCache(ds, other.vae, [36, 36], tmp_path).root != cache.root


def test_build_is_resumable_and_matches_the_vae(world, tmp_path):
    ds, model = world
    cache = LatentCache(ds, model.vae, [36, 36], tmp_path)
    assert cache.missing() == [0, 1, 2]
    cache.build(model.vae, episodes=[1], progress=False)  # an interrupted build
    assert cache.missing() == [0, 2]
    done = os.stat(cache.root / "ep_000001" / "top" / "zarr.json").st_ino
    # Remains of a builder that died: removed by the next build (pid 2**22 + 1 is never alive).
    dead = cache.root / ".staging" / f"{os.uname().nodename}-{2 ** 22 + 1}-deadbeef"
    dead.mkdir(parents=True)
    cache.build(model.vae, progress=False)
    assert cache.missing() == [] and not dead.exists()
    assert os.stat(cache.root / "ep_000001" / "top" / "zarr.json").st_ino == done  # not re-encoded
    frames = resize_images(frames_to_float(ds.frames(2, "wrist")), [36, 36])
    expected = model.vae.encode(frames).numpy()
    cached = cache.read(2, "wrist", range(ds.episode_lengths[2]))
    assert cached.dtype == np.float16 and cached.shape == (14, 4, 9, 9)
    np.testing.assert_allclose(cached.astype(np.float32), expected, atol=2e-3, rtol=2e-3)


def test_cached_samples_crop_latents_where_the_pixels_are_cropped(world, tmp_path):
    ds, model = world
    cfg = model.cfg
    cache = LatentCache(ds, model.vae, cfg.resize_shape, tmp_path)
    cache.build(model.vae, progress=False)
    spec, normalizer = sample_spec(cfg, model.vae.downsample), action_normalizer([ds])
    cached = EpisodeSamples(ds, range(3), spec, normalizer, cache)
    pixels = EpisodeSamples(ds, range(3), spec, normalizer, None)
    for index in (0, 4, 13):
        item = (index, (0, index))
        a, b = cached[item], pixels[item]
        assert set(a) - {"next_latents"} == set(b) - {"next_obs"}
        for key in ("obs", "actions", "has_actions", "sample_id"):
            assert torch.equal(a[key], b[key])  # identical except how the next frames are given
        _, ep, t = a["sample_id"].tolist()
        following = spec.window.frame_indices(ds.episode_lengths[ep], t)[1]
        current = spec.window.frame_indices(ds.episode_lengths[ep], t)[0]
        for v, cam in enumerate(cfg.cameras):
            resized = resize_images(frames_to_float(ds.frames(ep, cam, current)), cfg.resize_shape)
            offsets = range(0, cfg.resize_shape[0] - cfg.image_size + 1, 4)  # training crops: multiples of 4
            (top, left), = [(y, x) for y in offsets for x in offsets
                            if torch.equal(crop(resized, y, x, 32), a["obs"][v])]  # the pixel crop
            full = model.vae.encode(resize_images(frames_to_float(ds.frames(ep, cam, following)), cfg.resize_shape))
            expected = crop(full, top // 4, left // 4, 8).transpose(0, 1)
            torch.testing.assert_close(a["next_latents"][v], expected, atol=2e-3, rtol=2e-3)
        # The same kind of target as encoding the pixel crop on the fly (not equal: the VAE sees
        # the whole frame for the cache), same shape and scale.
        fresh = model.encode_frames(b["next_obs"][None])[0]
        assert fresh.shape == a["next_latents"].shape
        assert 0.8 < float(a["next_latents"].std() / fresh.std()) < 1.25
        assert np.corrcoef(a["next_latents"].flatten(), fresh.flatten())[0, 1] > 0.8


def test_missing_cache_entry_is_named(world, tmp_path):
    ds, model = world
    cache = LatentCache(ds, model.vae, [36, 36], tmp_path)
    cache.build(model.vae, episodes=[0], progress=False)
    with pytest.raises(DatasetError, match=r"episode 1 \(ep_000001\) camera top: latent cache entry is missing"):
        cache.read(1, "top", [0])
