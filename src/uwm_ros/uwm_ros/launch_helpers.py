"""Small helpers shared by the launch files in launch/ (no launch import: usable anywhere)."""
import os

TRUE_VALUES = ("true", "1", "yes", "on")


def is_true(value: str) -> bool:
    """A launch argument's string as a boolean."""
    return value.strip().lower() in TRUE_VALUES


def config_path(name: str) -> str:
    """config/<name> in the installed uwm_ros share directory, or in the source checkout."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return os.path.join(get_package_share_directory("uwm_ros"), "config", name)
    except (ImportError, LookupError, OSError):  # no ament index, package not in it, AMENT_PREFIX_PATH unset
        pass
    # source checkout: <ws>/src/uwm_ros/uwm_ros/launch_helpers.py -> <ws>/config/<name>
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "config", name)


DDS_PROFILE_FILE = "fastdds_large_images.xml"
DDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # Fast DDS 3, 2


def large_image_dds_env() -> dict[str, str]:
    """Environment for nodes that exchange camera images: the shipped Fast DDS profile
    (config/fastdds_large_images.xml, shared memory with 32 MB segments), unless the user set one."""
    if any(os.environ.get(name) for name in DDS_PROFILE_VARIABLES):
        return {}
    path = os.path.abspath(config_path(DDS_PROFILE_FILE))
    return {name: path for name in DDS_PROFILE_VARIABLES}
