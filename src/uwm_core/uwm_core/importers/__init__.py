"""Pretraining data into uwm datasets: LeRobot v3.0 (DROID, LIBERO on the hub) and robomimic/LIBERO
HDF5 imports, and the LeRobot v3.0 consistency checks. CLI: ``uwm-import lerobot|hdf5``; the
other way, ``uwm-export lerobot``, is ``uwm_core.exporters``.

    from uwm_core.importers import LeRobotSource, HDF5Source, Selection, load_mapping, run_import
    source = LeRobotSource.open("lerobot/droid_1.0.1", load_mapping("droid"))
    run_import(source, "data/droid", Selection(sample=2000, sample_by="building"))
"""
from .episodes import ImportReport, Selection, SourceError, run_import
from .hdf5 import HDF5Source
from .lerobot import LeRobotSource
from .lerobot_checks import check_lerobot_dataset, validate_lerobot_dataset
from .lerobot_format import LeRobotFormatError
from .mapping import Mapping, MappingError, load_mapping

__all__ = [
    "HDF5Source", "ImportReport", "LeRobotFormatError", "LeRobotSource", "Mapping", "MappingError", "Selection",
    "SourceError", "check_lerobot_dataset", "load_mapping", "run_import", "validate_lerobot_dataset",
]
