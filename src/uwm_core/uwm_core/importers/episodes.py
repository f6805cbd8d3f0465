"""What every importer shares: episode identity, selection, and the streaming, resumable import loop.

Each imported episode records where it came from in its metadata (``source``: the dataset path,
hub repo id or HDF5 file; ``source_episode``: the episode index or demo name there). An import
into an existing dataset skips every selected episode already recorded, so an interrupted import
is continued by running the same command again, without duplicates. Episodes are loaded, written
(atomically, by ``DatasetWriter``) and dropped one at a time: memory holds one episode's frames.

Selection (applied in this order; the result keeps the source's order):

* ``indices``: positions in the source's episode order (``0-99,250``),
* ``task``: a regular expression searched in the task text (case-insensitive),
* ``where``: metadata equality, ``{key: [accepted values]}`` (values compared as text),
* ``exclude``: episodes already imported into other uwm datasets (by their recorded source),
* ``sample``: a seeded random subset of that size; with ``sample_by`` it is spread evenly over
  the values of that metadata key (round-robin over the groups in a seeded random order), e.g.
  DROID trajectories sampled by location (``building``) as in the paper.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from ..data import DatasetWriter, open_dataset
from ..spatial import ACTION_DIM


class SourceError(ValueError):
    """An input that cannot be imported; the message names the file and key."""


@dataclass
class SourceEpisode:
    source: str  # the source dataset's identity (recorded as metadata "source")
    key: int | str  # the episode's identity within it (metadata "source_episode")
    task: str
    metadata: dict = field(default_factory=dict)  # values for --where / --sample-by, copied on import

    @property
    def identity(self) -> tuple[str, int | str]:
        return self.source, self.key


@dataclass
class LoadedEpisode:
    frames: dict  # our camera -> uint8 (K, H, W, 3)
    actions: np.ndarray | None  # float32 (K, 7)
    metadata: dict = field(default_factory=dict)


class Source(Protocol):
    name: str
    cameras: list[str]  # ours, in dataset order
    fps: float  # output rate

    def episodes(self, metadata_keys: set[str]) -> list[SourceEpisode]: ...

    def load(self, episode: SourceEpisode) -> LoadedEpisode: ...


@dataclass
class Selection:
    indices: list[int] | None = None
    task: str | None = None
    where: dict[str, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)  # uwm datasets whose sources are skipped
    sample: int | None = None
    sample_by: str | None = None
    seed: int = 0

    @property
    def metadata_keys(self) -> set[str]:
        return set(self.where) | ({self.sample_by} if self.sample_by else set())

    def apply(self, episodes: list[SourceEpisode]) -> list[SourceEpisode]:
        chosen = list(episodes)
        if self.indices is not None:
            bad = [i for i in self.indices if not 0 <= i < len(episodes)]
            if bad:
                raise SourceError(f"--episodes: {bad[:5]} out of range (the source has {len(episodes)} episodes)")
            wanted = set(self.indices)
            chosen = [e for i, e in enumerate(episodes) if i in wanted]
        if self.task:
            try:
                pattern = re.compile(self.task, re.IGNORECASE)
            except re.error as exc:
                raise SourceError(f"--task: {self.task!r} is not a regular expression ({exc})") from None
            chosen = [e for e in chosen if pattern.search(e.task)]
        for key, values in self.where.items():
            check_metadata_key(episodes, key, "--where")
            accepted = {str(v) for v in values}
            chosen = [e for e in chosen if str(e.metadata.get(key)) in accepted]
        if self.exclude:
            skip = imported_identities(self.exclude)
            chosen = [e for e in chosen if e.identity not in skip]
        if self.sample is not None and self.sample < len(chosen):
            rng = np.random.default_rng(self.seed)
            if self.sample_by:
                check_metadata_key(episodes, self.sample_by, "--sample-by")
                picked = spread_sample(chosen, self.sample, self.sample_by, rng)
            else:
                picked = set(rng.choice(len(chosen), self.sample, replace=False).tolist())
            chosen = [e for i, e in enumerate(chosen) if i in picked]
        return chosen


def check_metadata_key(episodes: list[SourceEpisode], key: str, option: str) -> None:
    if episodes and not any(key in e.metadata for e in episodes):
        available = sorted({k for e in episodes for k in e.metadata})
        raise SourceError(f"{option} {key}: no episode has this metadata key (available: {available})")


def spread_sample(episodes: list[SourceEpisode], count: int, key: str, rng: np.random.Generator) -> set[int]:
    """Positions of ``count`` episodes spread evenly over the groups of metadata ``key``."""
    groups = defaultdict(list)
    for i, episode in enumerate(episodes):
        groups[str(episode.metadata.get(key))].append(i)
    queues = [list(rng.permutation(groups[name])) for name in rng.permutation(sorted(groups))]
    picked: set[int] = set()
    while len(picked) < count:
        for queue in queues:
            if queue and len(picked) < count:
                picked.add(int(queue.pop()))
    return picked


def find_source_files(sources: list[str | Path], suffixes: tuple[str, ...], kind: str,
                      missing: type[Exception] = SourceError) -> list[Path]:
    """The files named in ``sources`` and those under the folders named there whose names end in
    one of ``suffixes`` (searched recursively, sorted per folder). A source that does not exist
    raises ``missing``; finding no file at all, SourceError."""
    files = []
    for source in map(Path, sources):
        if source.is_dir():
            files += sorted(p for p in source.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        elif source.is_file():
            files.append(source)
        else:
            raise missing(f"{source}: no such {kind} file or folder")
    if not files:
        raise SourceError(f"no {kind} files ({', '.join(suffixes)}) in {', '.join(map(str, sources))}")
    return files


def parse_indices(text: str) -> list[int]:
    """``"0-9,15"`` -> [0, ..., 9, 15] (ranges are inclusive)."""
    indices = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise SourceError(f"--episodes: {part!r} is not an index or a range a-b")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise SourceError(f"--episodes: range {part!r} is empty")
        indices.extend(range(first, last + 1))
    return indices


def parse_where(items: list[str]) -> dict[str, list[str]]:
    """``["building=AUTOLab,ILIAD"]`` -> {"building": ["AUTOLab", "ILIAD"]}."""
    where = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise SourceError(f"--where: {item!r} is not KEY=VALUE[,VALUE...]")
        where.setdefault(key.strip(), []).extend(v.strip() for v in values.split(","))
    return where


def imported_identities(datasets: list[str | Path]) -> set[tuple]:
    """(source, source_episode) of every episode of these uwm datasets."""
    found = set()
    for path in datasets:
        ds = open_dataset(path)
        for i in range(ds.num_episodes):
            meta = ds.metadata(i)
            if "source" in meta and "source_episode" in meta:
                found.add((meta["source"], meta["source_episode"]))
    return found


@dataclass
class ImportReport:
    selected: int = 0
    imported: int = 0
    already_present: int = 0
    frames: int = 0


def run_import(source: Source, out: str | Path, selection: Selection, progress: bool = True) -> ImportReport:
    """Import the selected episodes of ``source`` into the uwm dataset ``out`` (module docstring)."""
    chosen = selection.apply(source.episodes(selection.metadata_keys))
    if not chosen:
        raise SourceError(f"{source.name}: no episode matches the selection; nothing was written to {out}")
    out, writer, done = Path(out), None, set()
    if (out / "zarr.json").exists():  # appending: settings must match (ValueError naming both otherwise)
        writer = DatasetWriter(out, source.cameras, source.fps, ACTION_DIM)
        done = imported_identities([out])
    todo = [e for e in chosen if e.identity not in done]
    report = ImportReport(selected=len(chosen), already_present=len(chosen) - len(todo))
    bar = tqdm(total=len(todo), desc=f"import {Path(source.name).name}", unit="episode", disable=not progress)
    try:
        for episode in todo:
            loaded = source.load(episode)
            if writer is None:
                writer = DatasetWriter(out, source.cameras, source.fps, ACTION_DIM)
            metadata = {**episode.metadata, **loaded.metadata, "source": episode.source,
                        "source_episode": episode.key}
            writer.add_episode(loaded.frames, loaded.actions, task=episode.task,
                               metadata=metadata)
            report.imported += 1
            report.frames += len(next(iter(loaded.frames.values())))
            bar.set_postfix(frames=report.frames, refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return report
