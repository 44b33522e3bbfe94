"""``secret://env/NAME``: an environment variable of the process."""

from __future__ import annotations

import os
from collections.abc import Mapping

from organelle.errors import ConfigError
from organelle.secrets.base import SecretRef

__all__ = ["EnvProvider"]


class EnvProvider:
    """Reads ``NAME`` from ``environ`` (the process environment by default), at each read."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def read(self, ref: SecretRef) -> str:
        """The variable's value.

        Raises:
            ConfigError: the variable is not set.
        """
        environ = os.environ if self._environ is None else self._environ
        value = environ.get(ref.path)
        if value is None:
            raise ConfigError(f"environment variable {ref.path} is not set")
        return value
