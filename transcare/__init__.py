"""transcare: composition roots (CLI, processes, web) and shared infrastructure."""

__version__ = "0.1.0"
