"""The enrollment scan job; its steps live in ``monitors.scan``."""

from __future__ import annotations

from monitors.scan.pipeline import JOB, run_scan
from monitors.scan.report import ScanReport

__all__ = ["JOB", "ScanReport", "run_scan"]
