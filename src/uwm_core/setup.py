"""uwm_core: an ament_python package that is also a plain pip package (no ROS imports)."""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "uwm_core"
HERE = os.path.dirname(os.path.abspath(__file__))


def workspace_files(pattern):
    """Files of the workspace's top-level folders (config/...), relative to this setup.py."""
    return [os.path.relpath(p, HERE) for p in sorted(glob(os.path.join(HERE, "..", "..", pattern)))]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # Model presets and training recipes, so an installed uwm_core finds them (uwm_core.config).
        (f"share/{PACKAGE}/config/model", workspace_files("config/model/*.yaml")),
        (f"share/{PACKAGE}/config/train", workspace_files("config/train/*.yaml")),
        (f"share/{PACKAGE}/config/import", workspace_files("config/import/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "torch", "torchvision", "numpy", "diffusers", "huggingface_hub", "safetensors", "einops",
        "omegaconf", "PyYAML", "zarr>=3", "numcodecs", "tqdm", "tensorboard", "matplotlib", "pillow", "av",
        "scipy", "opencv-python", "simplejpeg", "pyarrow", "h5py",
    ],
    zip_safe=False,
    maintainer="uwm-ros developers",
    maintainer_email="uwm-ros@example.org",
    description="Unified World Models core: model, diffusion, datasets, training, checkpoints",
    license="MIT",
    entry_points={
        "console_scripts": [
            "uwm-train = uwm_core.train:main",
            "uwm-import-video = uwm_core.data.video_import:main",
            "uwm-import = uwm_core.importers.cli:import_main",
            "uwm-export = uwm_core.exporters.cli:main",
        ],
    },
)
