"""Datasets: the episodic Zarr store (store: reading, writer: writing), training samples, latent cache, video import.

    from uwm_core.data import DatasetWriter, open_dataset
    with DatasetWriter("data/demos", cameras=["left", "right", "wrist"], fps=10, action_dim=7,
                       state_dim=0) as w:  # state_dim 10: uwm_core.spatial.proprio_state per frame
        w.add_episode(frames={"left": uint8[T,H,W,3], ...}, actions=float32[T,7] | None, task="...",
                      state=None)  # or float32[T,state_dim]
    with DatasetUpdate("data/demos", ...) as u:  # the same, all-or-nothing: committed together at the end
        u.add_episode(...)
    ds = open_dataset("data/demos")
    ds.num_episodes, ds.cameras, ds.fps, ds.action_dim, ds.episode_lengths, ds.action_stats, ds.state_dim
    ep = ds.episode(0)  # .frames {cam: uint8[T,H,W,3]}, .actions float32[T,A] or None, .task, .metadata, .state
"""
import importlib

# Every name loads its module on first use: the robot interface imports the pure-numpy alignment
# without zarr, and writers and importers (uwm-bag2dataset, uwm-import) start without torch.
_LAZY = {
    **dict.fromkeys(("ActionStats", "DatasetError", "Episode", "EpisodicDataset", "open_dataset"), "store"),
    **dict.fromkeys(("DatasetBusyError", "DatasetUpdate", "DatasetWriter", "default_absolute_action_dims"), "writer"),
    **dict.fromkeys(("ColorJitter", "EpisodeSamples", "Mixture", "SampleSpec", "ShardedSampler", "Window",
                     "action_normalizer", "sample_spec", "split_episodes", "state_normalizer"), "samples"),
    **dict.fromkeys(("LatentCache", "vae_fingerprint"), "latent_cache"),
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ActionStats", "ColorJitter", "DatasetBusyError", "DatasetError", "DatasetUpdate", "DatasetWriter", "Episode",
    "EpisodeSamples", "EpisodicDataset", "LatentCache", "Mixture", "SampleSpec", "ShardedSampler", "Window",
    "action_normalizer", "default_absolute_action_dims", "open_dataset", "sample_spec", "split_episodes",
    "state_normalizer", "vae_fingerprint",
]
