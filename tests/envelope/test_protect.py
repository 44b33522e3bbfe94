"""Protected fields: sealed on the way out, opened with the key, left sealed without; mask()."""
# ruff: noqa: S105, S106 - made-up keys and passwords

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import msgspec
import pydantic
import pytest

from organelle.codec import codec_for
from organelle.envelope import Envelope, event, mask
from organelle.envelope._protect import FieldKeys, protect, unprotect
from organelle.errors import ConfigError, ValidationError

JSON = codec_for("json")
MSGPACK = codec_for("msgpack")


@event("prot.card.charged", secret=("card",), personal=("email", "address"))
class Charged(msgspec.Struct):
    order: str
    card: str
    email: str = msgspec.field(name="e-mail")
    address: dict[str, str] = msgspec.field(default_factory=dict)
    when: datetime | None = None


@event("prot.signup")
class Signup(pydantic.BaseModel):
    user: str
    password: str


@event("prot.signup", version=2, personal=("user",), secret=("password",))
class SignupV2(pydantic.BaseModel):
    user: str
    password: str


@event("prot.login", secret=("token",))
@dataclasses.dataclass(frozen=True)
class Login:
    user: str
    token: str


KEYS = FieldKeys(keys={"f1": b"k" * 32, "f2": b"j" * 16}, active="f1")


def charged() -> Charged:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    return Charged(order="o-1", card="4111", email="a@b.c", address={"city": "Oslo"}, when=when)


@pytest.mark.parametrize("codec", [JSON, MSGPACK])
def test_marked_fields_are_sealed_and_open_with_the_key(codec: Any) -> None:
    obj = charged()
    sealed = protect(obj, KEYS, codec.encode, "prot.card.charged")
    assert obj.card == "4111"  # the object itself is untouched
    assert sealed["order"] == "o-1"
    for name in ("card", "e-mail", "address"):
        assert sealed[name].startswith("enc:f1:")
    assert "4111" not in codec.encode(sealed).decode(errors="replace")
    received = codec.decode(codec.encode(sealed))
    opened = unprotect(received, KEYS, codec.decode, "prot.card.charged")
    assert opened == codec.decode(codec.encode(obj))
    without = unprotect(received, FieldKeys(keys={"f2": b"j" * 16}), codec.decode, "x")
    assert without == received  # a node without f1 keeps the ciphertext


def test_ciphertext_is_bound_to_its_field_and_event_type() -> None:
    sealed = protect(charged(), KEYS, JSON.encode, "prot.card.charged")
    moved = {**sealed, "e-mail": sealed["card"]}
    with pytest.raises(ValidationError) as err:
        unprotect(moved, KEYS, JSON.decode, "prot.card.charged")
    assert err.value.details["reason"] == "field"
    with pytest.raises(ValidationError):
        unprotect(sealed, KEYS, JSON.decode, "prot.other.type")
    flipped = {**sealed, "card": sealed["card"][:-4] + "AAA="}
    with pytest.raises(ValidationError):
        unprotect(flipped, KEYS, JSON.decode, "prot.card.charged")


def test_unmarked_types_dicts_and_inactive_keys_pass_unchanged() -> None:
    obj = charged()
    assert protect(obj, FieldKeys(keys={"f1": b"k" * 32}), JSON.encode, "t") is obj
    assert protect({"card": "4111"}, KEYS, JSON.encode, "t") == {"card": "4111"}
    signup = Signup(user="ada", password="pw")
    assert protect(signup, KEYS, JSON.encode, "prot.signup") is signup
    assert unprotect({"card": "enc:nope"}, FieldKeys(), JSON.decode, "t") == {"card": "enc:nope"}


def test_pydantic_and_dataclass_events_are_protected() -> None:
    signup = protect(SignupV2(user="ada", password="pw"), KEYS, JSON.encode, "prot.signup")
    assert signup["user"].startswith("enc:f1:")
    opened = unprotect(signup, KEYS, JSON.decode, "prot.signup")
    assert opened == {"user": "ada", "password": "pw"}
    login = protect(Login(user="ada", token="s3cret"), KEYS, JSON.encode, "prot.login")
    assert login["user"] == "ada"
    assert login["token"].startswith("enc:f1:")
    assert unprotect(login, KEYS, JSON.decode, "prot.login") == {"user": "ada", "token": "s3cret"}


def test_mask_replaces_secret_and_personal_fields() -> None:
    masked = mask(charged())
    assert isinstance(masked, Charged)
    assert msgspec.structs.asdict(masked) == {
        "order": "o-1",
        "card": "***",
        "email": "***",
        "address": "***",
        "when": masked.when,
    }
    assert mask(Login(user="ada", token="t")) == Login(user="ada", token="***")
    assert mask(Signup(user="ada", password="pw")) == Signup(user="ada", password="pw")
    assert mask(SignupV2(user="ada", password="pw")).password == "***"
    wire = {"order": "o-1", "card": "4111", "e-mail": "a@b.c"}
    assert mask(wire, Charged) == {"order": "o-1", "card": "***", "e-mail": "***"}
    assert mask(wire) == wire  # a dict with no type says nothing about its fields
    env: Envelope[Any] = Envelope(id="1", source="/s", type="prot.card.charged", data=wire)
    assert mask(env).data == {"order": "o-1", "card": "***", "e-mail": "***"}
    assert mask(env.with_data(charged())).data.card == "***"
    assert mask(42) == 42


def test_bad_field_keys_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="16, 24 or 32"):
        FieldKeys(keys={"f1": b"short"})
    with pytest.raises(ConfigError, match="not among"):
        FieldKeys(keys={"f1": b"k" * 32}, active="f2")
    with pytest.raises(ConfigError, match="not among"):
        FieldKeys(active="f2")
    with pytest.raises(ConfigError, match="no field key"):
        FieldKeys(keys={"f1": b"k" * 32}).seal(b"x", b"")
