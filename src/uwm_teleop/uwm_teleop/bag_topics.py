"""Which topics of a bag uwm-bag2dataset reads, and in which role: cameras, the action source
(delta commands, target poses or measured poses), the measured pose for the state, the gripper."""
from __future__ import annotations

from dataclasses import dataclass

from uwm_teleop.bag_reading import Bag, BagError
from uwm_teleop.conversion_config import ConvertConfig

COMMAND_TYPES = ("geometry_msgs/msg/TwistStamped", "geometry_msgs/msg/PoseStamped")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ROLE_TYPES = {
    "delta": ("geometry_msgs/msg/TwistStamped",),
    "target": ("geometry_msgs/msg/PoseStamped",),
    "pose": ("geometry_msgs/msg/PoseStamped",),
    "gripper": ("std_msgs/msg/Float32", "std_msgs/msg/Float64"),
}
ACTION_ROLES = ("delta", "target", "pose")  # auto takes the first with messages
# the roles each action source reads (targets: the measured pose seeds the first step)
SOURCE_ROLES = {"delta": ("delta",), "target": ("target", "pose"), "pose": ("pose",)}


@dataclass
class BagTopics:
    """The topics of one bag that the conversion reads."""

    topics: dict  # role -> topic; cameras as "camera:<name>"
    cameras: list  # the camera roles
    source: str  # the role the actions come from
    small: list  # the roles of small messages read in full (source, state pose, gripper)


def choose_topics(bag: Bag, cfg: ConvertConfig) -> BagTopics:
    """The roles and topics to read from ``bag``, each checked to be there with the right type."""
    topics = _topics_for(bag, cfg)
    cameras = [role for role in topics if role.startswith("camera:")]
    for role in cameras:
        _check_topic(bag, f"camera {role[7:]!r}", topics[role], IMAGE_TYPES)
    source = _action_source(bag, cfg, topics)
    small = [role for role in SOURCE_ROLES[source] if role in topics and topics[role] in bag.topics]
    if cfg.state and "pose" not in small:
        if "pose" not in topics or topics["pose"] not in bag.topics:
            raise BagError(bag.path, "the proprioceptive state needs the measured pose topic, which is not in the bag "
                                     f"(it has {sorted(bag.topics)}); set pose_topic, or state: false",
                           topics.get("pose", ""))
        small.append("pose")
    if "gripper" in topics:
        small.append("gripper")
    for role in small:
        _check_topic(bag, role, topics[role], ROLE_TYPES[role])
    return BagTopics(topics, cameras, source, small)


def unused_command_topics(bag: Bag, topics: dict) -> str | None:
    """When auto fell back to measured poses: the bag's command-like topics that went unused."""
    used = {topics.get(role) for role in ACTION_ROLES}
    unused = [f"{name} ({msgtype})" for name, msgtype in sorted(bag.topics.items())
              if msgtype in COMMAND_TYPES and name not in used and bag.message_counts.get(name, 0)]
    if not unused:
        return None
    return (f"actions come from the measured pose ({topics.get('pose')}): action_source auto found no messages on "
            f"delta_topic {topics.get('delta', '(unset)')!r} or target_topic {topics.get('target', '(unset)')!r}, "
            f"but the bag has command-like topics {', '.join(unused)}: set delta_topic (TwistStamped) or "
            f"target_topic (PoseStamped) in the conversion config")


def _topics_for(bag: Bag, cfg: ConvertConfig) -> dict:
    """role -> topic for this bag: the recorder's own map when present, else the config."""
    recorded = bag.recorded_topics if cfg.topics_from_bag else None
    if recorded is None:
        roles = {"delta": cfg.delta_topic, "target": cfg.target_topic, "pose": cfg.pose_topic,
                 "gripper": cfg.gripper_topic}
        cameras = dict(cfg.cameras)
    else:
        roles = {role: recorded.get(role, "") for role in ROLE_TYPES}
        cameras = recorded.get("cameras", {})
        if set(cameras) != set(cfg.cameras):
            raise BagError(bag.path, f"the recorder's cameras {sorted(cameras)} differ from the dataset's cameras "
                                     f"{sorted(cfg.cameras)} (set cameras in the config, or topics_from_bag: false)")
    topics = {f"camera:{name}": cameras[name] for name in cfg.cameras}
    topics.update({role: topic for role, topic in roles.items() if topic})
    return topics


def _check_topic(bag: Bag, role: str, topic: str, allowed: tuple) -> None:
    if topic not in bag.topics:
        hint = " (set gripper_topic: \"\" to use gripper_default)" if role == "gripper" else ""
        raise BagError(bag.path, f"the {role} topic is not in the bag{hint}; it has {sorted(bag.topics)}", topic)
    if bag.topics[topic] not in allowed:
        raise BagError(bag.path, f"{role} messages must be {' or '.join(allowed)}, got {bag.topics[topic]}", topic)


def _action_source(bag: Bag, cfg: ConvertConfig, topics: dict) -> str:
    present = {role for role in ACTION_ROLES if role in topics and bag.message_counts.get(topics[role], 0) > 0}
    if cfg.action_source != "auto":
        if cfg.action_source not in present:
            topic = topics.get(cfg.action_source, "")
            raise BagError(bag.path, f"action_source {cfg.action_source}: its topic has no messages in the bag", topic)
        return cfg.action_source
    for role in ACTION_ROLES:
        if role in present:
            return role
    raise BagError(bag.path, "no commands or poses to take actions from: none of " +
                   ", ".join(f"{r}_topic {topics.get(r, '(unset)')!r}" for r in ACTION_ROLES) +
                   f" has messages (the bag has {sorted(bag.topics)})")
