"""The package version, as the run directory and exports record it."""

__version__ = "0.1.0"
