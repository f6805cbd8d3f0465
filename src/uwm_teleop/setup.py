"""uwm_teleop: an ament_python package that is also a plain pip package."""
from setuptools import find_packages, setup

PACKAGE = "uwm_teleop"

# Each executable is reachable as a console script (pip) and as `ros2 run uwm_teleop <name>`.
NODES = {
    "teleop_node": "uwm_teleop.teleop_node:main",
    "recorder_node": "uwm_teleop.recorder:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    python_requires=">=3.10",
    install_requires=["uwm_core", "uwm_ros", "numpy", "rosbags", "ruamel.yaml.clib", "mcap", "opencv-python"],
    zip_safe=False,
    maintainer="uwm-ros developers",
    maintainer_email="uwm-ros@example.org",
    description="Teleop, episode recorder (rosbag2) and bag-to-dataset conversion for UWM",
    license="MIT",
    entry_points={
        "console_scripts": [
            *(f"{name} = {target}" for name, target in NODES.items()),
            "uwm-teleop = uwm_teleop.teleop_node:main",
            "uwm-recorder = uwm_teleop.recorder:main",
            "uwm-bag2dataset = uwm_teleop.bag2dataset:main",
        ],
    },
)
