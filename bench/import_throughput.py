"""Throughput of the pretraining-data importers and exporter, and of training reads of their output.

Builds a DROID-like LeRobot v3.0 dataset (3 cameras 180x320, AV1 as on the hub, 15 fps, several
episodes per mp4; tests/importers/importer_fixtures.py) and LIBERO-like HDF5 files (2 cameras
128x128, 20 Hz), then times, each import in a fresh process (so its peak memory is its own):

* ``uwm-import lerobot --mapping droid`` (15 -> 10 Hz): steps/s, camera frames decoded/s, peak
  memory next to one episode's frames (import streams one episode at a time);
* ``uwm-import hdf5 --mapping libero``: steps/s;
* ``uwm-export lerobot`` of the imported DROID data (libsvtav1): frames/s;
* training reads of the imported DROID data with uwm_core.data.EpisodeSamples at the paper preset
  (224x224 crops of 240x320, random crop + colour jitter, current and next frames of 3 cameras,
  no latent cache): samples/s and frames/s, in this process and through a DataLoader.

    .venv/bin/python bench/import_throughput.py [--episodes 6] [--seconds 10] [--samples 200] [--workers 2]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 reads it once, when first used (here: writing the sources)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "importers"))
from importer_fixtures import write_droid_like, write_libero_like  # noqa: E402


def memory_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak) of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def import_in_this_process(kind: str, source: str, out: str, results) -> None:
    from uwm_core.importers import HDF5Source, LeRobotSource, Selection, load_mapping, run_import

    baseline = memory_mb("VmRSS")  # the modules (torch...) before any data
    start = time.perf_counter()
    if kind == "lerobot":
        src = LeRobotSource.open(source, load_mapping("droid"))
    else:
        src = HDF5Source.open([source], load_mapping("libero"))
    report = run_import(src, out, Selection(), progress=False)
    results.put((time.perf_counter() - start, report.frames, memory_mb("VmHWM") - baseline))


def timed_import(kind: str, source: Path, out: Path) -> tuple[float, int, float]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=import_in_this_process, args=(kind, str(source), str(out), results))
    process.start()
    outcome = results.get()
    process.join()
    return outcome


def training_reads(dataset: Path, samples: int, workers: int) -> tuple[float, float, int]:
    import torch

    from uwm_core.config import load_model_config
    from uwm_core.data import ColorJitter, EpisodeSamples, action_normalizer, open_dataset, sample_spec

    ds = open_dataset(dataset)
    model_cfg = load_model_config("paper", {"cameras": ds.cameras})
    spec = sample_spec(model_cfg, downsample=8, color_jitter=ColorJitter())
    items = EpisodeSamples(ds, range(ds.num_episodes), spec, action_normalizer([ds]))
    rng = np.random.default_rng(0)
    picks = [(int(i), (0, 0)) for i in rng.integers(0, len(items), samples)]
    torch.set_num_threads(1)
    start = time.perf_counter()
    for item in picks:
        sample = items[item]
    single = samples / (time.perf_counter() - start)
    loader = torch.utils.data.DataLoader(items, batch_size=8, sampler=picks, num_workers=workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    pooled = samples / (time.perf_counter() - start)
    frames_per_sample = sample["obs"].shape[0] * (sample["obs"].shape[1] + sample["next_obs"].shape[1])
    return single, pooled, frames_per_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=6, help="DROID-like episodes (and LIBERO demos)")
    parser.add_argument("--seconds", type=float, default=10, help="length of each episode")
    parser.add_argument("--samples", type=int, default=200, help="training samples read")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the pooled read")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="uwm-import-bench-") as tmp:
        tmp = Path(tmp)
        droid_frames = int(args.seconds * 15)
        print(f"writing {args.episodes} DROID-like episodes of {droid_frames} frames (3 x 180x320 AV1) ...", flush=True)
        write_droid_like(tmp / "droid", lengths=[droid_frames] * args.episodes, size=(180, 320), episodes_per_file=3,
                         codec="libsvtav1")
        libero_frames = int(args.seconds * 20)
        write_libero_like(tmp / "libero", demos_per_file=(args.episodes, args.episodes),
                          lengths=[libero_frames] * (2 * args.episodes), size=(128, 128))

        seconds, steps, peak = timed_import("lerobot", tmp / "droid", tmp / "droid_uwm")
        decoded = 3 * droid_frames * args.episodes  # every 15 fps frame is decoded, the 10 Hz ones kept
        episode_mb = steps / args.episodes * 3 * 180 * 320 * 3 / 2**20
        print(f"uwm-import lerobot (DROID-like, 15 -> 10 Hz, 3 cameras 180x320 AV1): {steps} steps in {seconds:.1f} s"
              f" = {steps / seconds:.1f} steps/s, {3 * steps / seconds:.0f} camera frames/s written, "
              f"{decoded / seconds:.0f} decoded; peak memory above the loaded modules {peak:.0f} MB (one episode's "
              f"frames: {episode_mb:.0f} MB)")
        seconds, steps, peak = timed_import("hdf5", tmp / "libero", tmp / "libero_uwm")
        print(f"uwm-import hdf5 (LIBERO-like, 20 Hz, 2 cameras 128x128): {steps} steps in {seconds:.1f} s = "
              f"{steps / seconds:.1f} steps/s, {2 * steps / seconds:.0f} camera frames/s; peak memory above the loaded "
              f"modules {peak:.0f} MB")

        from uwm_core.exporters import export_lerobot

        start = time.perf_counter()
        report = export_lerobot(tmp / "droid_uwm", tmp / "droid_export", progress=False)
        seconds = time.perf_counter() - start
        print(f"uwm-export lerobot (libsvtav1, 3 cameras 180x320): {report.frames} steps in {seconds:.1f} s = "
              f"{report.frames / seconds:.1f} steps/s, {3 * report.frames / seconds:.0f} camera frames/s encoded")

        single, pooled, per_sample = training_reads(tmp / "droid_uwm", args.samples, args.workers)
        print(f"training reads of the imported DROID data (paper preset, {per_sample} frames per sample): "
              f"{single:.1f} samples/s = {single * per_sample:.0f} frames/s in one process; "
              f"{pooled:.1f} samples/s = {pooled * per_sample:.0f} frames/s with {args.workers} DataLoader workers")


if __name__ == "__main__":
    main()
