"""etg-monitor: proves Autopilot device preparation devices joined their ETG in time."""

__version__ = "0.1.0"
