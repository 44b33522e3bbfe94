"""Secrets in config: ``secret://`` references resolved at load and on rotation.

A config value ``secret://env/NAME``, ``secret://file/PATH`` or
``secret://vault/MOUNT/PATH#KEY`` is replaced by the secret's value when the
kernel is built and again on each reload (SIGHUP, ``config_watch``,
``Kernel.reload_config``, or every ``[secrets] refresh_s``). A value read this
way is masked in every dump, diff, event and log line; an unresolvable
reference is a ``ConfigError`` naming the key and the reference. See
docs/secrets.md.
"""

from organelle.secrets._resolve import Resolution, resolve_config
from organelle.secrets.base import PREFIX, SecretProvider, SecretRef, is_ref, parse_ref
from organelle.secrets.env import EnvProvider
from organelle.secrets.file import FileProvider
from organelle.secrets.vault import VaultProvider

__all__ = [
    "PREFIX",
    "EnvProvider",
    "FileProvider",
    "Resolution",
    "SecretProvider",
    "SecretRef",
    "VaultProvider",
    "is_ref",
    "parse_ref",
    "resolve_config",
]
