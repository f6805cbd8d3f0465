"""Writing rosbag2 files directly with rosbags (Jazzy typestore), for conversion tests and the bench."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer as McapWriter
from rosbags.rosbag2 import StoragePlugin, Writer

from uwm_core.image_codec import encode_compressed, encode_raw
from uwm_teleop.bag_reading import TYPESTORE

T = TYPESTORE.types
IMAGE, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
TWIST, POSE, FLOAT32 = "geometry_msgs/msg/TwistStamped", "geometry_msgs/msg/PoseStamped", "std_msgs/msg/Float32"


def header(stamp_ns: int, frame: str = "fr3_link0"):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9,
                                                                          nanosec=stamp_ns % 10**9), frame_id=frame)


class BagBuilder:
    """Collects messages, then writes them in log-time order (like a recorder would) on close."""

    def __init__(self, path, storage: str = "mcap", custom: dict | None = None):
        self.path, self.storage, self.custom = path, storage, dict(custom or {})
        self.items = []  # (log_ns, topic, type, raw)

    def add(self, topic, msgtype, msg, log_ns):
        self.items.append((int(log_ns), topic, msgtype, bytes(TYPESTORE.serialize_cdr(msg, msgtype))))

    def image(self, topic, stamp_ns, rgb, encoding="rgb8", pad=0, log_ns=None):
        enc, h, w, step, data = encode_raw(rgb, encoding)
        if pad:  # row padding: `step` larger than width * channels
            rows = np.frombuffer(data, np.uint8).reshape(h, step)
            data = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1).tobytes()
            step += pad
        msg = T[IMAGE](header=header(stamp_ns, "cam"), height=h, width=w, encoding=enc, is_bigendian=0, step=step,
                       data=np.frombuffer(data, np.uint8))
        self.add(topic, IMAGE, msg, stamp_ns if log_ns is None else log_ns)

    def raw_image(self, topic, stamp_ns, encoding, h, w, step, data):
        msg = T[IMAGE](header=header(stamp_ns, "cam"), height=h, width=w, encoding=encoding, is_bigendian=0,
                       step=step, data=np.frombuffer(data, np.uint8))
        self.add(topic, IMAGE, msg, stamp_ns)

    def compressed(self, topic, stamp_ns, rgb, fmt="jpeg"):
        msg = T[COMPRESSED](header=header(stamp_ns, "cam"), format=fmt,
                            data=np.frombuffer(encode_compressed(rgb, fmt), np.uint8))
        self.add(topic, COMPRESSED, msg, stamp_ns)

    def twist(self, topic, stamp_ns, delta6, log_ns=None):
        v = [float(x) for x in delta6]
        msg = T[TWIST](header=header(stamp_ns), twist=T["geometry_msgs/msg/Twist"](
            linear=T["geometry_msgs/msg/Vector3"](x=v[0], y=v[1], z=v[2]),
            angular=T["geometry_msgs/msg/Vector3"](x=v[3], y=v[4], z=v[5])))
        self.add(topic, TWIST, msg, stamp_ns if log_ns is None else log_ns)

    def pose(self, topic, stamp_ns, position, quat_xyzw):
        p, q = [float(x) for x in position], [float(x) for x in quat_xyzw]
        msg = T[POSE](header=header(stamp_ns), pose=T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
            orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))
        self.add(topic, POSE, msg, stamp_ns)

    def gripper(self, topic, log_ns, value):
        self.add(topic, FLOAT32, T[FLOAT32](data=float(value)), log_ns)

    def close(self):
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        with Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
            for key, value in self.custom.items():
                writer.set_custom_data(key, value if isinstance(value, str) else json.dumps(value))
            connections = {}
            for log_ns, topic, msgtype, raw in sorted(self.items, key=lambda item: item[0]):
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
                writer.write(connections[topic], log_ns, raw)
        return self.path


def rewrite_mcap(bag_dir, files: int = 1, compression: str = "") -> None:
    """Rewrite a one-file MCAP bag with the mcap library: split into ``files`` files in time (as
    `ros2 bag record --max-bag-duration` does) and/or with chunk ``compression`` (zstd, lz4)."""
    bag_dir = Path(bag_dir)
    metadata_file = bag_dir / "metadata.yaml"
    metadata = yaml.safe_load(metadata_file.read_text())
    info = metadata["rosbag2_bagfile_information"]
    (source,) = [bag_dir / name for name in info["relative_file_paths"]]
    with open(source, "rb") as stream:
        messages = list(make_reader(stream).iter_messages())
    source.unlink()
    parts = np.array_split(np.arange(len(messages)), files)
    info["relative_file_paths"], info["files"] = [], []
    for number, part in enumerate(parts):
        name = f"{bag_dir.name}_{number}.mcap"
        with open(bag_dir / name, "wb") as stream:
            writer = McapWriter(stream, compression=CompressionType[compression.upper() or "NONE"], chunk_size=4096)
            writer.start(profile="ros2", library="bagfactory")
            schema_ids, channel_ids = {}, {}
            for at in part.tolist():
                schema, channel, message = messages[at]
                if schema.id not in schema_ids:
                    schema_ids[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
                if channel.id not in channel_ids:
                    channel_ids[channel.id] = writer.register_channel(channel.topic, channel.message_encoding,
                                                                      schema_ids[schema.id], channel.metadata)
                writer.add_message(channel_ids[channel.id], message.log_time, message.data, message.publish_time,
                                   message.sequence)
            writer.finish()
        times = [messages[at][2].log_time for at in part.tolist()]
        info["relative_file_paths"].append(name)
        info["files"].append({"path": name, "starting_time": {"nanoseconds_since_epoch": min(times)},
                              "duration": {"nanoseconds": max(times) - min(times)}, "message_count": len(part)})
    metadata_file.write_text(yaml.safe_dump(metadata))
