"""Packaging: uwm_core stays ROS-free, installs editable into a fresh venv, and colcon builds all three."""
import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROS_PREFIXES = ("rclpy", "rosidl", "rcl_interfaces", "sensor_msgs", "geometry_msgs", "std_msgs", "std_srvs",
                "lifecycle_msgs", "diagnostic_msgs", "launch", "launch_ros", "ament_index_python", "rosbags",
                "uwm_ros", "uwm_teleop")


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module ``source`` imports, at any depth (functions, try blocks)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def forbidden_imports(package: Path, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """file -> the forbidden modules it imports, for every .py file of ``package``."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        bad = sorted(imported_modules(path.read_text()) & set(forbidden))
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


def test_the_import_check_sees_imports_inside_functions_and_try_blocks():
    source = ("import os\n"
              "def f():\n    from rclpy.node import Node\n"
              "try:\n    import uwm_teleop.x\nexcept ImportError:\n    pass\n")
    assert imported_modules(source) == {"os", "rclpy", "uwm_teleop"}


def test_uwm_core_imports_no_ros_module_and_uwm_ros_no_teleop_module():
    """Dependencies point one way: uwm_core (no ROS) <- uwm_ros <- uwm_teleop, read from the source."""
    assert forbidden_imports(ROOT / "src/uwm_core/uwm_core", ROS_PREFIXES) == {}
    assert forbidden_imports(ROOT / "src/uwm_ros/uwm_ros", ("uwm_teleop",)) == {}


@pytest.mark.parametrize("package", ["uwm_core", "uwm_ros", "uwm_teleop"])
def test_every_module_imports(package):
    """Import errors and cycles show here; the check above only reads the source."""
    code = (f"import importlib, pkgutil, {package}\n"
            f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'):\n"
            "    importlib.import_module(m.name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def test_pip_install_editable_uwm_core_into_a_fresh_venv(tmp_path):
    """A new venv gets uwm_core through `pip install -e src/uwm_core`; the heavy third-party
    dependencies are borrowed from the project venv (a .pth line) instead of downloaded again."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", "-e", str(ROOT / "src" / "uwm_core")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (venv / "bin" / "uwm-train").is_file()
    where = subprocess.check_output([str(py), "-c", "import uwm_core, uwm_core.config as c; print(uwm_core.__file__); print(c.config_dir())"], text=True)
    assert str(ROOT / "src" / "uwm_core" / "uwm_core") in where and str(ROOT / "config") in where


@pytest.mark.skipif(shutil.which("colcon", path=os.path.dirname(sys.executable)) is None and shutil.which("colcon") is None,
                    reason="colcon is not installed")
def test_colcon_builds_the_three_packages_with_launch_and_config_in_share(tmp_path):
    colcon = shutil.which("colcon", path=os.path.dirname(sys.executable)) or shutil.which("colcon")
    out = subprocess.run([colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(ROOT / "src"),
                          "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    install = tmp_path / "install"
    for pkg in ("uwm_core", "uwm_ros", "uwm_teleop"):
        assert (install / pkg / "share" / "ament_index" / "resource_index" / "packages" / pkg).is_file()
        assert (install / pkg / "share" / pkg / "package.xml").is_file()
    share = install / "uwm_ros" / "share" / "uwm_ros"
    assert (share / "launch" / "policy.launch.py").is_file()
    assert (share / "config" / "policy.yaml").is_file()
    assert (install / "uwm_core" / "share" / "uwm_core" / "config" / "model" / "paper.yaml").is_file()
    for exe in ("policy_node", "sim_node"):
        assert os.access(install / "uwm_ros" / "lib" / "uwm_ros" / exe, os.X_OK)
    for exe in ("teleop_node", "recorder_node"):
        assert os.access(install / "uwm_teleop" / "lib" / "uwm_teleop" / exe, os.X_OK)
    # The installed (not the source) uwm_core finds its presets in its share directory.
    env = {**os.environ, "PYTHONPATH": str(next((install / "uwm_core" / "lib").glob("python3*/site-packages")))}
    code = "import uwm_core.config as c; print(c.config_dir()); print(c.load_model_config('paper').depth)"
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
    assert str(install / "uwm_core" / "share" / "uwm_core" / "config") in found.stdout and found.stdout.split()[-1] == "12"
