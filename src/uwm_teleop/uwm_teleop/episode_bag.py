"""One recorded episode's rosbag2 (MCAP, written with ``rosbags``): written in ``<name>.partial/``
and renamed to ``<name>/`` only once closed and flushed to disk (``uwm_core.durable``), so a killed
recorder leaves its interrupted episode marked ``.partial`` and never damages finished ones."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer

from uwm_core.durable import commit_directory, replace_file
from uwm_teleop.bag_reading import META_OUTCOME, METADATA_FILE, PARTIAL_SUFFIX, TYPESTORE


class EpisodeBag:
    """One episode's rosbag2, written in ``<name>.partial`` and renamed to ``<name>`` when finished."""

    def __init__(self, output_dir: Path, name: str, custom: dict[str, str]):
        self.name = name
        self.final_path = output_dir / name
        self.partial_path = output_dir / f"{name}{PARTIAL_SUFFIX}"
        self.writer = Writer(self.partial_path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        for key, value in custom.items():
            self.writer.set_custom_data(key, value)
        self.connections = {}
        self.count = 0
        self.started = time.monotonic()

    def add_topic(self, topic: str, type_name: str) -> None:
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, type_name, typestore=TYPESTORE)

    def write(self, topic: str, type_name: str, log_ns: int, raw: bytes) -> None:
        self.add_topic(topic, type_name)
        self.writer.write(self.connections[topic], log_ns, raw)
        self.count += 1

    def finish(self, outcome: str) -> Path:
        """Close the bag with its outcome, make it durable, then give it its final name."""
        self.writer.set_custom_data(META_OUTCOME, outcome)
        self.writer.close()
        # rosbags names the storage file after its directory: <name>.partial.mcap becomes <name>.mcap
        # (inside the still-partial directory, so no reader ever sees the two out of step)
        partial_file = self.partial_path / f"{self.partial_path.name}.mcap"
        final_file = self.partial_path / f"{self.name}.mcap"
        os.rename(partial_file, final_file)
        metadata = self.partial_path / METADATA_FILE
        replace_file(metadata, metadata.read_text().replace(partial_file.name, final_file.name))
        return commit_directory(self.partial_path, self.final_path)

    def discard(self) -> None:
        self.writer.abort()
        shutil.rmtree(self.partial_path, ignore_errors=True)
