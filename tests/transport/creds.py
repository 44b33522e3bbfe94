"""NKEYs and NATS JWTs minted in the test, for the credential tests (needs ``nkeys``).

Two server setups:

* ``nkey_config(user)``: a plain nkey user, ``authorization { users = [{nkey: U…}] }``.
* ``operator_config(...)``: decentralized auth without the ``nsc`` tool: an
  operator, an account (JetStream enabled) and a user, each a self-made JWT
  (``ed25519-nkey`` signatures), with the account preloaded in a ``MEMORY``
  resolver. A user JWT plus its seed make the ``.creds`` file organelle reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]


@dataclass(frozen=True, slots=True)
class NKey:
    """One nkey pair: the seed (secret, ``S…``) and the public key (``U…``, ``A…``, ``O…``)."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        """The ed25519 signature of ``data``."""
        signature: bytes = nkeys.from_seed(self.seed.encode()).sign(data)
        return signature


def new_nkey(kind: str) -> NKey:
    """A fresh key pair of ``kind``: ``user``, ``account`` or ``operator``."""
    prefix = {
        "user": nkeys.PREFIX_BYTE_USER,
        "account": nkeys.PREFIX_BYTE_ACCOUNT,
        "operator": nkeys.PREFIX_BYTE_OPERATOR,
    }[kind]
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    public = nkeys.from_seed(seed).public_key
    return NKey(seed=seed.decode(), public=public.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {"version": 2, **nats},
    }
    digest = hashlib.sha512(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest[:32]).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signed = f"{header}.{body}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator-mode setup: the server config and a user's ``.creds`` text."""

    config: str
    user_creds: str
    stranger_creds: str
    """Creds of a user signed by an account the server does not know."""


def creds_file(user_jwt: str, seed: str) -> str:
    """The text of a ``.creds`` file, in the layout ``nsc`` writes."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


def _user_creds(account: NKey) -> str:
    user = new_nkey("user")
    nats = {"type": "user", "pub": {}, "sub": {}, **_UNLIMITED}
    return creds_file(_jwt(account, user.public, "node", nats), user.seed)


def operator_setup() -> Operator:
    """An operator, a system account, one JetStream-enabled account and a user of it."""
    operator = new_nkey("operator")
    system = new_nkey("account")
    account = new_nkey("account")
    op_claims = {"type": "operator", "system_account": system.public}
    op_jwt = _jwt(operator, operator.public, "organelle-test", op_claims)
    sys_jwt = _jwt(operator, system.public, "SYS", {"type": "account"})
    limits = {
        **_UNLIMITED,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
        "mem_storage": -1,
        "disk_storage": -1,
        "streams": -1,
        "consumer": -1,
    }
    acct_jwt = _jwt(operator, account.public, "app", {"type": "account", "limits": limits})
    config = (
        f"operator: {op_jwt}\n"
        "resolver: MEMORY\n"
        f"system_account: {system.public}\n"
        f"resolver_preload: {{\n  {system.public}: {sys_jwt}\n  {account.public}: {acct_jwt}\n}}\n"
    )
    return Operator(
        config=config,
        user_creds=_user_creds(account),
        stranger_creds=_user_creds(new_nkey("account")),
    )


def nkey_config(*users: NKey) -> str:
    """A server config admitting these plain nkey users (no JWT)."""
    entries = ", ".join(f"{{nkey: {u.public}}}" for u in users)
    return f"authorization {{\n  users = [{entries}]\n}}\n"


def write(path: Path, text: str) -> str:
    """Write a secret file readable by its owner only; return its path."""
    path.write_text(text)
    path.chmod(0o600)
    return str(path)
