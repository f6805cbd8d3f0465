"""Finding and reading rosbag2 episodes: MCAP or sqlite3, written by uwm-recorder or `ros2 bag record`.

Pure-Python readers only (no rosbag2_py): ``rosbags`` opens every bag and deserialises with the ROS 2
Jazzy typestore. MCAP files with indexed, uncompressed chunks (what rosbags and uwm-recorder write)
have their messages found through the MCAP message indexes and read with positioned reads
(``IndexedMcap``), so reading a topic touches only its own messages; other MCAP files are read with
the ``mcap`` library, about 3x faster on camera-sized messages than rosbags' reader.
Every failure is a ``BagError`` whose message names the bag and, where known, topic and time.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from mcap.opcode import Opcode
from mcap.reader import make_reader
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
SAFE_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: 10x faster on a bag's metadata
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


# byte layout of MCAP records (https://mcap.dev/spec): opcode (1), record length (8), then the fields
CHUNK_RECORDS_AT = 1 + 8 + 8 + 8 + 8 + 4 + 4 + 8  # start/end time, uncompressed size, crc, "" compression, length
MESSAGE_INDEX_ENTRIES_AT = 1 + 8 + 2 + 4  # channel id, length of the (log time, offset) entries
MESSAGE_DATA_AT = 1 + 8 + 2 + 4 + 8 + 8  # channel id, sequence, log time, publish time
HEADER_BYTES = 4 + 8  # CDR encapsulation and a std_msgs/Header stamp


class IndexedMcap:
    """An MCAP file whose chunks are all indexed and uncompressed, read through the message
    indexes of its summary: a reader of some topics reads only their messages, and of a camera
    whose header stamps are all it needs only the first bytes of each frame."""

    def __init__(self, path: Path, summary):
        self.path = path
        self._channels = {channel.topic: channel_id for channel_id, channel in summary.channels.items()}
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self._log_times, self._offsets, self._channel_ids = self._read_index(summary.chunk_indexes)
        except BaseException:
            os.close(self._fd)
            raise

    @classmethod
    def open(cls, path: Path) -> "IndexedMcap | None":
        """The indexed reader of ``path``, or None when the file is not indexed and uncompressed."""
        with open(path, "rb") as stream:
            summary = make_reader(stream).get_summary()
        if summary is None or not summary.chunk_indexes or any(c.compression for c in summary.chunk_indexes):
            return None
        return cls(path, summary)

    def _read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise ValueError(f"the file ends at byte {offset + len(data)}, inside a record "
                             f"({length} bytes at {offset})")
        return data

    def _read_index(self, chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Log time, file offset and channel of every message, in log-time order (ties in file order)."""
        log_times, offsets, channels = ([np.zeros(0, dtype=np.int64)] for _ in range(3))
        for chunk in chunks:
            records_at = chunk.chunk_start_offset + CHUNK_RECORDS_AT
            for channel_id, index_at in chunk.message_index_offsets.items():
                opcode, _, _, entries_length = struct.unpack("<BQHI", self._read(index_at, MESSAGE_INDEX_ENTRIES_AT))
                if opcode != Opcode.MESSAGE_INDEX or entries_length % 16:
                    raise ValueError(f"no message index at byte {index_at}")
                entries = np.frombuffer(self._read(index_at + MESSAGE_INDEX_ENTRIES_AT, entries_length),
                                        dtype="<u8").astype(np.int64)
                log_times.append(entries[0::2])
                offsets.append(entries[1::2] + records_at)
                channels.append(np.full(entries.size // 2, channel_id, dtype=np.int64))
        log_times, offsets, channels = (np.concatenate(a) for a in (log_times, offsets, channels))
        order = np.lexsort((offsets, log_times))
        return log_times[order], offsets[order], channels[order]

    def count(self, topic: str) -> int:
        return int((self._channel_ids == self._channels[topic]).sum()) if topic in self._channels else 0

    def messages(self, topics, head_only=(), only=None):
        """(topic, log time ns, data) in log-time order; of ``head_only`` topics only the first
        HEADER_BYTES of the data; of a topic in ``only`` only the messages whose number on that
        topic (from 0, in this order) is in the array ``only[topic]``."""
        topic_of = {self._channels[t]: t for t in topics if t in self._channels}
        heads = {self._channels[t] for t in head_only if t in self._channels}
        keep = np.zeros(self._channel_ids.size, dtype=bool)
        for channel_id, topic in topic_of.items():
            mine = np.flatnonzero(self._channel_ids == channel_id)
            if topic in (only or {}):
                numbers = only[topic]
                mine = mine[numbers[(numbers >= 0) & (numbers < mine.size)]]
            keep[mine] = True
        for at in np.flatnonzero(keep).tolist():
            offset, channel_id = int(self._offsets[at]), int(self._channel_ids[at])
            opcode, length, channel = struct.unpack("<BQH", self._read(offset, 11))
            if opcode != Opcode.MESSAGE or channel != channel_id:
                raise ValueError(f"the message index points at byte {offset}, where no message of "
                                 f"{topic_of[channel_id]} is")
            size = length - (MESSAGE_DATA_AT - 9)
            yield topic_of[channel_id], int(self._log_times[at]), self._read(
                offset + MESSAGE_DATA_AT, min(size, HEADER_BYTES) if channel_id in heads else size)

    def close(self) -> None:
        os.close(self._fd)


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
        self._indexed: list[IndexedMcap] | None = None  # opened at the first read

    def _custom_data(self) -> dict[str, str]:
        metadata = self.path / METADATA_FILE
        if not metadata.is_file():
            return {}
        info = yaml.load(metadata.read_text(), Loader=SAFE_YAML_LOADER).get("rosbag2_bagfile_information", {})
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

    def _indexed_files(self) -> list[IndexedMcap] | None:
        """Indexed readers of the bag's MCAP files, or None when one of them is not indexed and
        uncompressed."""
        if self._indexed is None:
            files = self._mcap_files() or []
            try:
                indexed = [IndexedMcap.open(path) for path in files]
            except Exception:  # a damaged summary: the mcap library's reader reports it
                indexed = [None]
            if files and all(indexed):
                self._indexed = indexed
            else:
                for reader in indexed:
                    if reader is not None:
                        reader.close()
                self._indexed = []
        return self._indexed or None

    def messages(self, topics, head_only=(), only=None):
        """(topic, log time ns, raw CDR bytes) of ``topics`` in log-time order. Of the ``head_only``
        topics at least the first HEADER_BYTES (the header stamp), the whole message where the
        storage cannot give less; of a topic in ``only`` only the messages whose number on that
        topic (from 0, in this order) is in ``only[topic]``."""
        only = {topic: np.unique(np.asarray(numbers, dtype=np.int64)) for topic, numbers in (only or {}).items()}
        indexed = self._indexed_files()
        if indexed is not None:
            try:
                for reader in indexed:  # split files follow each other in time, as rosbags reads them
                    yield from reader.messages(topics, head_only, only)
                    only = {topic: numbers - reader.count(topic) for topic, numbers in only.items()}
            except Exception as err:
                raise BagError(self.path, f"damaged while reading messages: {err}") from None
            return
        count = dict.fromkeys(only, -1)
        for topic, log_ns, raw in self._library_messages(topics):
            if topic in count:
                count[topic] += 1
                if count[topic] not in only[topic]:
                    continue
            yield topic, log_ns, raw

    def _library_messages(self, topics):
        files = self._mcap_files()
        if files is None:
            yield from self._rosbags_messages(topics)
            return
        try:
            for path in files:
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
        for reader in self._indexed or []:
            reader.close()
        self._reader.close()

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
