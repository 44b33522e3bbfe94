"""The package version, kept on the ground floor so any layer may read it."""

__version__ = "0.1.0"
