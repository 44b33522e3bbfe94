"""JWTs issued and read with PyJWT: access tokens for the gateway, refresh tokens to renew them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from organelle.errors import UnauthenticatedError

ALGORITHM = "HS256"
ACCESS_TYP = "at+jwt"  # RFC 9068: an access token cannot be passed off as another kind
REFRESH_TYP = "refresh+jwt"


@dataclass(frozen=True, slots=True)
class Issuer:
    """Signs and checks this app's tokens with one HMAC secret."""

    secret: str
    issuer: str
    audience: str
    access_ttl_s: float
    refresh_ttl_s: float

    def access(self, user_id: str, roles: list[str]) -> str:
        """A signed access token for ``user_id`` with ``roles``."""
        now = int(time.time())
        claims = {
            "sub": user_id,
            "roles": roles,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + int(self.access_ttl_s),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM, headers={"typ": ACCESS_TYP})

    def refresh(self, user_id: str, family: str) -> tuple[str, str]:
        """A signed refresh token and its id (``jti``), one of ``family``."""
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {
            "sub": user_id,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + int(self.refresh_ttl_s),
            "jti": jti,
            "fam": family,
        }
        token = jwt.encode(claims, self.secret, algorithm=ALGORITHM, headers={"typ": REFRESH_TYP})
        return token, jti

    def read(self, token: str, typ: str) -> dict[str, Any]:
        """The claims of a valid token of kind ``typ``.

        Raises:
            UnauthenticatedError: expired, forged, of another kind or another issuer.
        """
        try:
            header = jwt.get_unverified_header(token)
            if str(header.get("typ", "")).lower() != typ:
                raise UnauthenticatedError("invalid token: wrong kind")
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("token expired") from None
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError(f"invalid token: {exc}") from None
        return claims
