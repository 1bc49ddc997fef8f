"""Graph I/O: one module per Graph area, each mapping responses into monitors.models."""
