"""uwm datasets out to other formats: LeRobot v3.0 (``uwm-export lerobot``, ``uwm_core.exporters.cli``).

    from uwm_core.exporters import export_lerobot
    report = export_lerobot("data/demos", "exports/demos_lerobot", robot_type="franka")
"""
from .lerobot import ExportReport, export_lerobot

__all__ = ["ExportReport", "export_lerobot"]
