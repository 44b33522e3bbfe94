"""``secret://file/PATH``: a file's content (Docker and Kubernetes mount secrets as files).

A relative ``PATH`` is relative to the config file's folder;
``secret://file//run/secrets/db`` (two slashes) is absolute. One trailing
newline is dropped: ``echo pw > file`` writes one.
"""

from __future__ import annotations

from pathlib import Path

from organelle.errors import ConfigError
from organelle.secrets.base import SecretRef

__all__ = ["FileProvider"]


class FileProvider:
    """Reads files relative to ``base`` (the config file's folder), at each read."""

    def __init__(self, base: Path) -> None:
        self._base = base

    def read(self, ref: SecretRef) -> str:
        """The file's text without its trailing newline.

        Raises:
            ConfigError: the file is missing or unreadable.
        """
        path = self._base / ref.path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"file {str(path)!r} cannot be read: {type(exc).__name__}") from None
        return text.removesuffix("\n").removesuffix("\r")
