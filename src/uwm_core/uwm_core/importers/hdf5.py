"""robomimic / LIBERO HDF5 demonstrations as an importer Source (``uwm-import hdf5``).

Layout (robomimic's, which LIBERO uses)::

    data/                      attrs: env_args (JSON, robomimic), problem_info (JSON, LIBERO)
      demo_0/
        actions                float (T, 7)
        obs/<camera>           uint8 (T, H, W, 3), e.g. agentview_rgb, eye_in_hand_rgb (LIBERO),
                               agentview_image, robot0_eye_in_hand_image (robomimic)
        obs/<state>            float (T, d)
      demo_1/ ...

Several files are merged into one multitask dataset, episodes ordered by file (as given) and
demo number. The task of a file comes from its name (LIBERO: ``KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5``
-> "turn on the stove"), from robomimic's ``env_args`` env_name, or from ``--task``. Images are
flipped as the mapping says (LIBERO and robomimic render upside down: ``flip: vertical``).
Each episode's metadata records the file (``source``) and demo (``source_episode``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .episodes import LoadedEpisode, SourceEpisode, SourceError, find_source_files
from .mapping import Mapping, MappingError, check_format, step_intervals

HDF5_SUFFIXES = (".hdf5", ".h5")
SCENE_PREFIX = re.compile(r"^(?:[A-Z0-9]+_)*SCENE\d+_")  # LIBERO-90/10 file names start with the scene


def task_from_file_name(path: Path) -> str:
    """LIBERO: the scene prefix and the ``_demo`` suffix removed, underscores as spaces."""
    stem = re.sub(r"_demo$", "", path.stem)
    return SCENE_PREFIX.sub("", stem).replace("_", " ").strip()


def demo_number(name: str) -> tuple[int, str]:
    match = re.search(r"(\d+)$", name)
    return (int(match[1]) if match else -1, name)


def open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise SourceError(f"{path}: not a readable HDF5 file ({exc})") from None


@dataclass
class HDF5Source:
    files: list[Path]
    mapping: Mapping
    fps: float
    source_fps: float
    task: str | None = None  # overrides every file's task

    @classmethod
    def open(cls, sources: list[str | Path], mapping: Mapping, fps: float | None = None,
             source_fps: float | None = None, task: str | None = None) -> "HDF5Source":
        check_format(mapping, "hdf5")
        if not mapping.cameras:
            raise MappingError(f"{mapping.path}: cameras must name at least one obs key (e.g. {{left: agentview_rgb}})")
        source_fps = source_fps or mapping.source_fps
        if source_fps is None:
            raise MappingError(f"{mapping.path}: source_fps is needed for HDF5 files (or give --source-fps)")
        files = find_source_files(sources, HDF5_SUFFIXES, "HDF5")
        source = cls(files, mapping, float(fps or mapping.fps or source_fps), float(source_fps), task)
        step_intervals(1, source.source_fps, source.fps)  # refuses upsampling now
        return source

    @property
    def name(self) -> str:
        return str(self.files[0].parent if len(self.files) > 1 else self.files[0])

    @property
    def cameras(self) -> list[str]:
        return list(self.mapping.cameras)

    # ------------------------------------------------------------------ Source
    def episodes(self, metadata_keys: set[str]) -> list[SourceEpisode]:
        episodes = []
        for path in self.files:
            with open_h5(path) as f:
                if "data" not in f or not isinstance(f["data"], h5py.Group):
                    raise SourceError(f"{path}: no 'data' group, so not a robomimic/LIBERO demonstration file "
                                      f"(top-level keys: {sorted(f.keys())})")
                data = f["data"]
                task = self.task or self.file_task(path, data)
                for demo in sorted(data.keys(), key=demo_number):
                    group = data[demo]
                    if not isinstance(group, h5py.Group):
                        continue
                    metadata = {"file": path.name, "demo": demo}
                    metadata.update({k: plain_attr(v) for k, v in group.attrs.items() if np.ndim(v) == 0})
                    episodes.append(SourceEpisode(str(path.resolve()), demo, task, metadata))
        return episodes

    def file_task(self, path: Path, data: h5py.Group) -> str:
        if self.mapping.task_from == "env_name":
            try:
                return str(json.loads(data.attrs["env_args"])["env_name"])
            except (KeyError, TypeError, ValueError):
                raise SourceError(f"{path}: data.attrs['env_args'] has no env_name (task_from: env_name in "
                                  f"{self.mapping.path}); give --task") from None
        return task_from_file_name(path)

    def load(self, episode: SourceEpisode) -> LoadedEpisode:
        path = Path(episode.source)
        with open_h5(path) as f:
            group = f["data"][episode.key]
            where = f"{path}: data/{episode.key}"
            frames, length = {}, None
            for ours, key in self.mapping.cameras.items():
                if f"obs/{key}" not in group:
                    keys = sorted(group["obs"].keys()) if "obs" in group else []
                    raise SourceError(f"{where}/obs has no camera {key!r} (camera {ours!r} of {self.mapping.path}; "
                                      f"obs keys: {keys})")
                images = group[f"obs/{key}"]
                if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                    raise SourceError(f"{where}/obs/{key}: expected uint8 (T, H, W, 3) images, got "
                                      f"{images.dtype} {images.shape}")
                if length is not None and images.shape[0] != length:
                    raise SourceError(f"{where}/obs/{key}: {images.shape[0]} frames, other cameras have {length}")
                length = images.shape[0]
                frames[ours] = images
            starts, ends = step_intervals(length, self.source_fps, self.fps)
            # one episode is read whole (contiguous reads are far faster than h5py point selection)
            loaded = {ours: self.mapping.flip_frames(images[()][starts]) for ours, images in frames.items()}
            actions = None
            if self.mapping.actions is not None:
                columns = {}
                for ref in self.mapping.actions.columns:
                    if ref.name not in group:
                        raise SourceError(f"{where} has no {ref.name!r} (used by {self.mapping.path})")
                    values = group[ref.name][()]
                    if len(values) != length:
                        raise SourceError(f"{where}/{ref.name}: {len(values)} rows, the images have {length}")
                    columns[ref.name] = values
                try:
                    actions = self.mapping.actions.actions(columns, starts, ends)
                except MappingError as exc:
                    raise SourceError(f"{where}: {exc} ({self.mapping.path})") from None
        return LoadedEpisode(loaded, actions, {"source_fps": self.source_fps})


def plain_attr(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
