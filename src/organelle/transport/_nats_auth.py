"""The CONNECT command's fields: protocol features and credentials (user, token, creds).

A ``.creds`` file holds a user JWT and an nkey seed; the server's nonce is
signed with the seed (the ``nkeys`` package, loaded only when creds are used).
"""

from __future__ import annotations

import base64
import importlib
import re
from pathlib import Path
from typing import Any

from organelle.errors import ConfigError
from organelle.transport._nats_options import NatsOptions

__all__ = ["connect_fields"]


def connect_fields(opts: NatsOptions, info: dict[str, Any]) -> dict[str, Any]:
    """The CONNECT fields: what this client speaks and who it is."""
    fields: dict[str, Any] = {
        "verbose": False,
        "pedantic": False,
        "name": f"organelle:{opts.node}",
        "lang": "python-organelle",
        "version": "0.1",
        "protocol": 1,
        "headers": True,
        "no_responders": True,
        "echo": True,
    }
    if opts.user is not None:
        fields["user"] = opts.user
        fields["pass"] = opts.password or ""
    if opts.token is not None:
        fields["auth_token"] = opts.token
    if opts.creds is not None:
        fields.update(_sign_creds(opts.creds, str(info.get("nonce", ""))))
    if opts.nkey_seed is not None:
        fields.update(_sign_nkey(opts.nkey_seed, str(info.get("nonce", ""))))
    return fields


def _section(text: str, name: str) -> str:
    """The body of ``-----BEGIN <name>----- … ------END <name>------`` in a creds file."""
    match = re.search(rf"-+BEGIN {name}-+\s*(\S+)\s*-+END {name}-+", text)
    if match is None:
        raise ConfigError(f"kernel.transport_options.creds: no {name} in the creds file")
    return match.group(1)


def _nkeys(option: str) -> Any:
    try:
        return importlib.import_module("nkeys")
    except ImportError:
        raise ConfigError(
            f"kernel.transport_options.{option}: needs the 'nkeys' package "
            "(pip install 'organelle[nats]')"
        ) from None


def _signature(keypair: Any, nonce: str) -> str:
    return base64.urlsafe_b64encode(keypair.sign(nonce.encode())).decode().rstrip("=")


def _sign_creds(path: str, nonce: str) -> dict[str, str]:
    """The ``jwt`` and ``sig`` fields of CONNECT from a ``.creds`` file (needs ``nkeys``)."""
    nkeys = _nkeys("creds")
    text = Path(path).read_text()
    jwt, seed = _section(text, "NATS USER JWT"), _section(text, "USER NKEY SEED")
    return {"jwt": jwt, "sig": _signature(nkeys.from_seed(seed.encode()), nonce)}


def _sign_nkey(path: str, nonce: str) -> dict[str, str]:
    """The ``nkey`` and ``sig`` fields of CONNECT for a plain nkey user (no JWT)."""
    nkeys = _nkeys("nkey_seed")
    text = Path(path).read_text()
    match = re.search(r"\bSU[A-Z2-7]{50,}\b", text)
    if match is None:
        raise ConfigError("kernel.transport_options.nkey_seed: no user seed (SU…) in the file")
    keypair = nkeys.from_seed(match.group(0).encode())
    return {"nkey": keypair.public_key.decode(), "sig": _signature(keypair, nonce)}
