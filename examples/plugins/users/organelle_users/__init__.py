"""Users and auth as an organelle plugin: ``pip install organelle-users``, ``modules = ["users"]``.

* ``users.register(email, password)`` — a user with the default roles; the
  password hashed with argon2id (``argon2-cffi``), never stored;
* ``users.login(email, password)`` — an access token (a short-lived JWT the
  gateway's ``[modules.gateway.auth.jwt]`` accepts: ``sub``, ``roles``, ``iss``, ``aud``) and
  a refresh token;
* ``users.refresh(refresh_token)`` — new tokens; each refresh token works
  once, and a reused one revokes the whole family (a stolen token is noticed);
* ``users.logout(refresh_token)``, ``users.verify(access_token)``;
* ``users.grant_role`` / ``users.revoke_role`` — for callers with the ``admin`` role.

Everything lives in the module's own Store namespace; the manifest lets it
emit ``users.>`` events and nothing else.
"""

from organelle_users._module import Tokens, User, Users

__all__ = ["Tokens", "User", "Users"]
