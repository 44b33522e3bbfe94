"""App configuration: files, environment overrides and kernel settings."""

from organelle.config.loader import apply_env, import_object, load_file, merge
from organelle.config.settings import KernelSettings, parse_settings

__all__ = ["KernelSettings", "apply_env", "import_object", "load_file", "merge", "parse_settings"]
