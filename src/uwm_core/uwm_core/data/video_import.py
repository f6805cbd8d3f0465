"""uwm-import-video: ordinary videos -> action-free episodes for cotraining (paper III-D, A-A3).

    uwm-import-video videos/ --out data/videos --like data/demos
    uwm-import-video clip1.mp4 more/ --out data/videos --cameras left right wrist --fps 10 --size 180 320

Every video file (mp4, webm, mkv, mov, avi; folders are searched recursively) is decoded with
PyAV (``uwm_core.importers.video``), resampled to the dataset frame rate (each output time takes
the latest source frame at or before it) and cut into episodes of at most ``--max-frames``
frames. The robot data has several camera views and a video has one, so each camera view is
imputed as a random crop of the same video (paper A-A3), fixed over an episode and resized to the
output size. ``--like`` copies cameras, fps, action_dim and frame size from a robot dataset, so
the result can be mixed with it.

Unreadable or corrupt files are skipped with a warning and counted; when no file is usable the
command fails naming them, and creates no dataset. Files already imported (same source path in
an episode's metadata) are skipped, so an interrupted import can simply be run again.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..importers.episodes import find_source_files
from ..importers.video import resampled_frames
from .store import open_dataset
from .writer import DatasetWriter

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
MIN_EPISODE_FRAMES = 2  # a shorter tail of a video is dropped
CROP_SCALE = (0.6, 1.0)  # side length of an imputed view relative to the largest crop
log = logging.getLogger("uwm-import-video")


@dataclass
class ImportReport:
    episodes: int = 0
    videos: int = 0  # videos that gave at least one episode
    skipped: list = field(default_factory=list)  # (path, reason)
    already_imported: int = 0


def crop_box(frame_hw, out_hw, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random (top, left, height, width) with the output's aspect ratio inside the frame."""
    H, W = frame_hw
    aspect = out_hw[0] / out_hw[1]
    h_max, w_max = (H, H / aspect) if H / aspect <= W else (W * aspect, W)
    scale = rng.uniform(*CROP_SCALE)
    h, w = max(1, int(round(h_max * scale))), max(1, int(round(w_max * scale)))
    return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w


def import_videos(sources, out, cameras: list[str], fps: float, size: tuple[int, int], action_dim: int = 7,
                  max_frames: int = 600, seed: int = 0, task: str | None = None, progress: bool = True) -> ImportReport:
    files = find_source_files(sources, VIDEO_SUFFIXES, "video", missing=FileNotFoundError)
    if max_frames < MIN_EPISODE_FRAMES:
        raise ValueError(f"max_frames: must be >= {MIN_EPISODE_FRAMES}, got {max_frames}")
    out, done, writer, report = Path(out), set(), None, ImportReport()
    if out.exists():  # append: cameras/fps must match (checked now); a new dataset is made at the first episode
        writer = DatasetWriter(out, cameras, fps, action_dim)
        existing = open_dataset(out)
        done = {existing.metadata(i).get("source") for i in range(existing.num_episodes)}
    rng = np.random.default_rng(seed)
    H, W = size
    try:
        for path in tqdm(files, desc="import videos", unit="video", disable=not progress):
            source = str(path.resolve())
            if source in done:
                report.already_imported += 1
                continue
            clips, frames, boxes = 0, [], None

            def commit():
                nonlocal writer, clips
                if writer is None:
                    writer = DatasetWriter(out, cameras, fps, action_dim)
                views = {cam: np.stack([f[i] for f in frames]) for i, cam in enumerate(cameras)}
                writer.add_episode(views, None, task=task or path.stem.replace("_", " "),
                                   metadata={"source": source, "clip": clips, "crops": dict(zip(cameras, boxes))})
                clips += 1

            decoded, error = resampled_frames(path, fps), None
            while True:
                try:
                    rgb = next(decoded)
                except StopIteration:
                    break
                except Exception as exc:  # corrupt or unsupported file: report it, keep going
                    error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
                    break
                if boxes is None:
                    boxes = [crop_box(rgb.shape[:2], (H, W), rng) for _ in cameras]
                frames.append([cv2.resize(rgb[t:t + h, l:l + w], (W, H), interpolation=cv2.INTER_AREA)
                               for t, l, h, w in boxes])
                if len(frames) == max_frames:
                    commit()
                    frames, boxes = [], None
            if error is None and len(frames) >= MIN_EPISODE_FRAMES:
                commit()
            elif error is None and clips == 0:
                error = f"only {len(frames)} frame(s) at {fps:g} fps"
            if error is not None:
                if clips:
                    error += f" (after {clips} complete episode(s), which are kept)"
                report.skipped.append((path, error))
                log.warning("skipping %s: %s", path, error)
            if clips:
                report.videos += 1
                report.episodes += clips
    finally:
        if writer is not None:
            writer.close()
    if report.episodes == 0 and report.already_imported == 0:
        names = "; ".join(f"{p}: {r}" for p, r in report.skipped[:3])
        raise ValueError(f"no usable video among {len(files)} file(s) ({names}); nothing was written to {out}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uwm-import-video", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="video files or folders (searched recursively)")
    parser.add_argument("--out", required=True, help="dataset to create or append to")
    parser.add_argument("--like", help="robot dataset whose cameras, fps, action_dim and frame size to use")
    parser.add_argument("--cameras", nargs="+", help="camera names (each an imputed view)")
    parser.add_argument("--fps", type=float, help="dataset frame rate")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="frame size (default: --like's, else 180 320)")
    parser.add_argument("--action-dim", type=int, help="action_dim recorded in the dataset (default: --like's, else 7)")
    parser.add_argument("--max-frames", type=int, default=600, help="longest episode; longer videos are split")
    parser.add_argument("--task", help="task string (default: the file name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the imputed crops")
    args = parser.parse_args(argv)
    logging.basicConfig(format="uwm-import-video: %(levelname)s: %(message)s")
    try:
        cameras, fps, size, action_dim = args.cameras, args.fps, args.size, args.action_dim
        if args.like:
            like = open_dataset(args.like)
            if like.num_episodes == 0:
                raise ValueError(f"--like: {args.like} has no episodes")
            cameras = cameras or like.cameras
            fps = fps or like.fps
            size = size or like.frame_shape(0, like.cameras[0])
            action_dim = action_dim or like.action_dim
        if not cameras or not fps:
            raise ValueError("give --like <robot dataset>, or --cameras and --fps")
        report = import_videos(args.sources, args.out, cameras, fps, tuple(size or (180, 320)), action_dim or 7,
                               args.max_frames, args.seed, args.task)
    except (ValueError, FileNotFoundError) as exc:
        print(f"uwm-import-video: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    print(f"imported {report.episodes} episode(s) from {report.videos} video(s) into {args.out}; "
          f"skipped {len(report.skipped)} unreadable file(s)"
          + (f", {report.already_imported} already imported" if report.already_imported else ""))


if __name__ == "__main__":
    main()
