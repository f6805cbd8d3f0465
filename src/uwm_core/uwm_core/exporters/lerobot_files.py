"""Writing LeRobot v3.0 files: data parquet and mp4 files that roll over at a size, the tasks and
episodes metadata tables, and the encoder settings LeRobot uses (layout:
``uwm_core.importers.lerobot_format``)."""
from __future__ import annotations

import contextlib
import fractions
import json
import os
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..importers.lerobot_format import CHUNKS_SIZE, EPISODES_PATH, VIDEO_PATH
from ..importers.video import open_video


class RollingParquet:
    """Tables appended to chunk-XXX/file-YYY.parquet files, a new file once one holds limit_mb."""

    def __init__(self, root: Path, template: str, schema: pa.Schema, limit_mb: float):
        self.root, self.template, self.schema, self.limit = root, template, schema, limit_mb * 2**20
        self.chunk, self.file, self.writer, self.bytes, self.files = 0, 0, None, 0, 0

    def write(self, table: pa.Table) -> tuple[int, int]:
        if self.writer is None:
            path = self.root / self.template.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, self.schema, compression="snappy")
            self.files += 1
        self.writer.write_table(table.cast(self.schema))
        self.bytes += table.nbytes
        location = (self.chunk, self.file)
        if self.bytes >= self.limit:
            self.close()
            self.chunk, self.file = next_file(self.chunk, self.file)
        return location

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.bytes = None, 0


class RollingVideo:
    """One camera's episodes in concatenated mp4 files, as LeRobot builds them: each episode is
    encoded on its own (starting with a keyframe), then its packets are copied into the current
    file after the previous episodes (a new file once one would exceed limit_mb). Episode frame i
    is at from_timestamp + i / fps of its file."""

    def __init__(self, root: Path, key: str, fps: int, codec: str, options: dict, limit_mb: float):
        self.root, self.key, self.fps, self.codec, self.options = root, key, fps, codec, options
        self.limit, self.chunk, self.file = limit_mb * 2**20, 0, 0
        self.container = self.stream = None
        self.frames_in_file, self.bytes, self.files = 0, 0, 0
        self.scratch = root / f".episode-{key}.mp4"

    def write(self, frames: np.ndarray) -> dict:
        self.encode(frames, self.scratch)
        size = self.scratch.stat().st_size
        if self.container is not None and self.bytes + size >= self.limit:
            self.close()
            self.chunk, self.file = next_file(self.chunk, self.file)
        with open_video(self.scratch) as (episode, source):
            if self.container is None:
                path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)
                path.parent.mkdir(parents=True, exist_ok=True)
                self.container = av.open(str(path), "w", options={"movflags": "faststart"})
                self.stream = self.container.add_stream_from_template(template=source, opaque=True)
                self.stream.time_base = source.time_base
                self.frames_in_file, self.bytes, self.files = 0, 0, self.files + 1
            offset = round(fractions.Fraction(self.frames_in_file, self.fps) / source.time_base)
            for packet in episode.demux(source):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.pts += offset
                packet.dts += offset
                packet.stream = self.stream
                self.container.mux(packet)
        start = self.frames_in_file
        self.frames_in_file += len(frames)
        self.bytes += size
        return {f"videos/{self.key}/chunk_index": self.chunk, f"videos/{self.key}/file_index": self.file,
                f"videos/{self.key}/from_timestamp": start / self.fps,
                f"videos/{self.key}/to_timestamp": self.frames_in_file / self.fps}

    def encode(self, frames: np.ndarray, path: Path) -> None:
        with thread_scheduling_kept(), av.open(str(path), "w") as container:
            stream = container.add_stream(self.codec, rate=self.fps, options=self.options)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts, frame.time_base = i, fractions.Fraction(1, self.fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode())

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def finish(self) -> None:
        self.close()
        self.scratch.unlink(missing_ok=True)


@contextlib.contextmanager
def thread_scheduling_kept():
    """Restore the calling thread's scheduling policy on exit. SVT-AV1 (libsvtav1, LeRobot's
    encoder) switches the thread that opens it to SCHED_FIFO priority 99 when run as root: a
    real-time thread that keeps computing starves every other thread on its core (ROS executors,
    DDS) and passes the policy on to the processes it starts."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)


def arrow_column(values: np.ndarray) -> pa.Array:
    """A numpy column as arrow: (T,) -> scalars, (T, n) -> fixed-size lists (LeRobot's Sequence)."""
    if values.ndim == 1:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def codec_options(codec: str, crf: int, gop: int) -> dict:
    """LeRobot's encoder settings: a keyframe every ``gop`` frames for fast random access."""
    options = {"g": str(gop), "crf": str(crf)}
    if codec == "libsvtav1":
        options["preset"] = "12"
    return options


def video_info(path: Path, fps: int) -> dict:
    """The features[<video>]["info"] LeRobot stores (read back from the encoded file)."""
    with open_video(path) as (_, stream):
        return {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec_context.codec.canonical_name, "video.pix_fmt": stream.pix_fmt,
                "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as pandas writes a DataFrame indexed by task string (what
    LeRobot's pd.read_parquet expects): the index stored as a column, named in the pandas metadata."""
    pandas_metadata = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                     "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema([("task_index", pa.int64()), ("__index_level_0__", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_metadata).encode()})
    return pa.table({"task_index": np.arange(len(tasks), dtype=np.int64), "__index_level_0__": tasks}, schema=schema)


def write_episode_rows(root: Path, rows: list[dict], limit_mb: float) -> None:
    """meta/episodes parquet files; each row records the file it is in (meta/episodes/*_index)."""
    chunk, file, start, size = 0, 0, 0, 0.0
    for end, row in enumerate(rows, start=1):
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk, file
        size += len(json.dumps(row)) / 2**20
        if size >= limit_mb or end == len(rows):
            path = root / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows[start:end]), path)
            chunk, file = next_file(chunk, file)
            start, size = end, 0.0
