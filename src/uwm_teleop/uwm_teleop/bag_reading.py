"""Finding and reading rosbag2 episodes: MCAP or sqlite3, written by uwm-recorder or `ros2 bag record`.

Pure-Python readers only (no rosbag2_py): ``rosbags`` opens every bag and deserialises with the ROS 2
Jazzy typestore; the messages of MCAP storage are read with the ``mcap`` library, about 3x faster
on camera-sized messages than rosbags' reader (it copies each record several times).
Every failure is a ``BagError`` whose message names the bag and, where known, topic and time.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import yaml
from mcap.reader import make_reader
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
METADATA_FILE = "metadata.yaml"
STORAGE_SUFFIXES = (".mcap", ".db3")
FINGERPRINT_MESSAGES = 32  # first messages hashed into the identity of a bag without a recorder id
PARTIAL_SUFFIX = ".partial"  # uwm-recorder writes an episode here and renames it when it is finished
# custom_data keys written by uwm-recorder into metadata.yaml
META_TASK, META_OUTCOME, META_EPISODE_ID = "uwm.task", "uwm.outcome", "uwm.episode_id"
META_TOPICS, META_SOFTWARE, META_STARTED = "uwm.topics", "uwm.software", "uwm.started_at"


class BagError(Exception):
    """A bag that cannot be converted: the message names the bag and, where known, topic and time."""

    def __init__(self, bag, problem: str, topic: str | None = None, time_ns: int | None = None,
                 start_ns: int | None = None):
        where = str(bag)
        if topic:
            where += f", topic {topic}"
        if time_ns is not None:
            where += f", at {format_time(time_ns, start_ns)}"
        super().__init__(f"{where}: {problem}")


def format_time(time_ns: int, start_ns: int | None = None) -> str:
    stamp = f"stamp {time_ns // 1_000_000_000}.{time_ns % 1_000_000_000:09d}"
    if start_ns is None:
        return stamp
    return f"{(time_ns - start_ns) / 1e9:.3f} s into the bag ({stamp})"


@dataclass(frozen=True)
class BagCandidate:
    """A path given for conversion: a readable bag, an interrupted recording, or not a bag at all."""

    path: Path
    incomplete: str | None = None  # why the recording is unfinished
    problem: str | None = None  # why it is not a bag


def _unfinished_bag_dir(directory: Path) -> str | None:
    """Why ``directory`` (without metadata.yaml) is an interrupted recording, or None if it is not one."""
    if directory.name.endswith(PARTIAL_SUFFIX):
        return "the recording was interrupted (uwm-recorder never finished this .partial episode)"
    storage = [f for f in directory.iterdir() if f.suffix in STORAGE_SUFFIXES]
    # rosbags names the file <dir>.mcap, ros2 bag record <dir>_0.mcap: theirs, not loose files
    if storage and all(f.stem == directory.name or f.stem.startswith(directory.name + "_") for f in storage):
        return f"the recording was interrupted ({METADATA_FILE} missing: the recorder never closed the bag)"
    return None


def find_bags(paths) -> list[BagCandidate]:
    """Bags named by ``paths``: bag directories, .mcap/.db3 files, or directories searched for bags."""
    found: list[BagCandidate] = []
    seen: set[Path] = set()

    def add(candidate: BagCandidate) -> None:
        key = candidate.path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(candidate)

    for given in (Path(p) for p in paths):
        if not given.exists():
            add(BagCandidate(given, problem="does not exist"))
        elif given.is_file():
            if given.suffix not in STORAGE_SUFFIXES:
                add(BagCandidate(given, problem="is not a rosbag2 (expected a bag directory with metadata.yaml, "
                                               "or a .mcap / .db3 file)"))
            elif (given.parent / METADATA_FILE).exists():
                add(BagCandidate(given.parent))
            else:
                add(BagCandidate(given, incomplete=_unfinished_bag_dir(given.parent)))
        else:
            before = len(found)
            for directory, subdirs, files in os.walk(given):
                directory = Path(directory)
                subdirs.sort()
                if METADATA_FILE in files:
                    add(BagCandidate(directory))
                    subdirs.clear()
                elif reason := _unfinished_bag_dir(directory):
                    add(BagCandidate(directory, incomplete=reason))
                    subdirs.clear()
                else:
                    for name in sorted(files):
                        if Path(name).suffix in STORAGE_SUFFIXES:
                            add(BagCandidate(directory / name))
            if len(found) == before:
                add(BagCandidate(given, problem="is not a rosbag2 and contains none (no metadata.yaml, "
                                               ".mcap or .db3 found)"))
    return found


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """The std_msgs/Header stamp of a CDR message whose first field is the header, without
    deserialising the rest (an image stays untouched)."""
    little_endian = raw[1] & 1  # encapsulation id: CDR_BE 0x0000, CDR_LE 0x0001
    sec, nanosec = struct.unpack_from("<iI" if little_endian else ">iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def has_header(msgtype: str) -> bool:
    fields = TYPESTORE.fielddefs.get(msgtype, ((), ()))[1]
    return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == "std_msgs/msg/Header"


class Bag:
    """An open rosbag2 (use as a context manager)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as err:  # rosbags raises ReaderError, OSError, KeyError, ... for damaged files
            hint = (" (truncated or unfinished MCAP: the writer was killed, or the copy is incomplete; "
                    "`ros2 bag reindex` may recover it)" if "magic" in str(err).lower() else "")
            raise BagError(self.path, f"cannot be read: {err}{hint}") from None
        self.topics = {name: info.msgtype for name, info in self._reader.topics.items()}
        self.message_counts = {name: info.msgcount for name, info in self._reader.topics.items()}
        self.start_ns = self._reader.start_time if self._reader.message_count else 0
        self.custom = self._custom_data()

    def _custom_data(self) -> dict[str, str]:
        metadata = self.path / METADATA_FILE
        if not metadata.is_file():
            return {}
        info = yaml.safe_load(metadata.read_text()).get("rosbag2_bagfile_information", {})
        return dict(info.get("custom_data") or {})

    @property
    def recorded_topics(self) -> dict | None:
        """uwm-recorder's role -> topic map, or None for other bags."""
        return json.loads(self.custom[META_TOPICS]) if META_TOPICS in self.custom else None

    @property
    def source_id(self) -> str:
        """A stable identity of the recording, the same for any copy of it."""
        if META_EPISODE_ID in self.custom:
            return self.custom[META_EPISODE_ID]
        digest = hashlib.sha256(json.dumps([self._reader.start_time, self._reader.duration,
                                            sorted(self.message_counts.items())]).encode())
        # rosbags' order, as in the identities of datasets converted before the mcap reader came in
        for _, (_, _, raw) in zip(range(FINGERPRINT_MESSAGES), self._rosbags_messages(self.topics)):
            digest.update(raw)  # the content too: timing and counts alone can coincide
        return f"bag-{digest.hexdigest()[:24]}"

    def _mcap_files(self) -> list[Path] | None:
        """The bag's MCAP files in recording order, or None when its messages need rosbags
        (sqlite3 storage, or per-message compression)."""
        storage = self._reader.storage
        if getattr(getattr(storage, "metadata", None), "compression_mode", None) == "message":
            return None
        storages = getattr(storage, "storages", [storage])  # a bag directory holds one per split file
        if not all(isinstance(s, McapReader) for s in storages):
            return None
        return [Path(s.path) for s in storages]

    def messages(self, topics):
        """(topic, log time ns, raw CDR bytes) of ``topics`` in log-time order."""
        files = self._mcap_files()
        if files is None:
            yield from self._rosbags_messages(topics)
            return
        try:
            for path in files:  # split files follow each other in time, as rosbags reads them
                with open(path, "rb") as stream:
                    for _, channel, message in make_reader(stream).iter_messages(topics=list(topics)):
                        yield channel.topic, message.log_time, message.data
        except Exception as err:
            raise BagError(self.path, f"damaged while reading messages: {err}") from None

    def _rosbags_messages(self, topics):
        connections = [c for c in self._reader.connections if c.topic in set(topics)]
        try:
            for connection, log_ns, raw in self._reader.messages(connections=connections):
                yield connection.topic, log_ns, raw
        except Exception as err:
            raise BagError(self.path, f"damaged while reading messages: {err}") from None

    def deserialize(self, raw, topic: str):
        return TYPESTORE.deserialize_cdr(raw, self.topics[topic])

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
