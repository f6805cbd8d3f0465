"""uwm_ros: an ament_python package that is also a plain pip package."""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "uwm_ros"
HERE = os.path.dirname(os.path.abspath(__file__))


def workspace_files(pattern):
    """Files of the workspace's top-level folders (launch/, config/), relative to this setup.py."""
    return [os.path.relpath(p, HERE) for p in sorted(glob(os.path.join(HERE, "..", "..", pattern)))]


# Each executable is reachable as a console script (pip) and as `ros2 run uwm_ros <name>`.
NODES = {
    "policy_node": "uwm_ros.policy.node:main",
    "sim_node": "uwm_ros.sim.node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # launch/ and config/ live at the top of the workspace; install them into this
        # package's share directory so `ros2 launch uwm_ros policy.launch.py` finds them.
        (f"share/{PACKAGE}/launch", workspace_files("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", workspace_files("config/*.yaml") + workspace_files("config/*.xml")),
    ],
    python_requires=">=3.10",
    install_requires=["uwm_core", "numpy", "opencv-python"],
    zip_safe=False,
    maintainer="uwm-ros developers",
    maintainer_email="uwm-ros@example.org",
    description="UWM policy lifecycle node, simulated Franka and launch wiring",
    license="MIT",
    entry_points={
        "console_scripts": [
            *(f"{name} = {target}" for name, target in NODES.items()),
            "uwm-policy-node = uwm_ros.policy.node:main",
            "uwm-sim-node = uwm_ros.sim.node:main",
            "uwm-sim-expert = uwm_ros.sim.expert_node:main",
            "uwm-demo = uwm_ros.tools.demo:main",
            "uwm-eval-sim = uwm_ros.tools.eval_sim:main",
        ],
    },
)
