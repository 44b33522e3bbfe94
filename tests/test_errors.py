from __future__ import annotations

import pickle

import pytest

from organelle import errors
from organelle.errors import (
    CallTimeoutError,
    ConfigError,
    InternalError,
    NotFoundError,
    OrganelleError,
    RemoteError,
    ValidationError,
)

ALL = [
    getattr(errors, name)
    for name in errors.__all__
    if isinstance(getattr(errors, name), type)
    and issubclass(getattr(errors, name), OrganelleError)
    # Raised by a transport itself, never rebuilt from a reply: it shares NotFoundError's code.
    and name != "NotServedError"
]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_round_trips_over_the_wire(cls: type[OrganelleError]) -> None:
    err = cls("boom", details={"k": 1})
    back = OrganelleError.from_wire(err.to_wire())
    assert type(back) is cls
    assert back.message == "boom"
    assert back.code == cls.code
    assert back.details.get("k") == 1


def test_codes_are_unique_and_stable() -> None:
    codes = [c.code for c in ALL]
    assert len(codes) == len(set(codes))
    assert NotFoundError.code == "organelle.not_found"
    assert CallTimeoutError.code == "organelle.timeout"


def test_branches_are_also_builtin_exceptions() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(NotFoundError, LookupError)
    assert issubclass(CallTimeoutError, TimeoutError)


def test_validation_error_keeps_field_list() -> None:
    err = ValidationError("bad", errors=[{"field": "a", "message": "int expected"}])
    back = OrganelleError.from_wire(err.to_wire())
    assert isinstance(back, ValidationError)
    assert back.errors == [{"field": "a", "message": "int expected"}]


def test_unknown_code_becomes_remote_error_and_relays_unchanged() -> None:
    wire = {"code": "nobody.knows_this", "type": "OutOfStock", "message": "none left"}
    err = OrganelleError.from_wire(wire)
    assert isinstance(err, RemoteError)
    assert err.remote_code == "nobody.knows_this"
    assert err.remote_type == "OutOfStock"
    assert err.to_wire()["code"] == "nobody.knows_this"


def test_user_subclass_with_own_code_round_trips() -> None:
    class OutOfStockError(NotFoundError):
        code = "test.errors.out_of_stock"

    back = OrganelleError.from_wire(OutOfStockError("sku A").to_wire())
    assert type(back) is OutOfStockError


def test_subclass_without_code_does_not_shadow_parent() -> None:
    class Mine(NotFoundError):
        pass

    assert type(OrganelleError.from_wire(NotFoundError("x").to_wire())) is NotFoundError
    assert Mine("y").code == NotFoundError.code


def test_internal_error_wraps_foreign_exception() -> None:
    err = InternalError.wrap(KeyError("sku"))
    assert err.error_type == "KeyError"
    assert "KeyError" in err.message
    back = OrganelleError.from_wire(err.to_wire())
    assert isinstance(back, InternalError)
    assert back.error_type == "KeyError"


def test_errors_pickle() -> None:
    err = ValidationError("bad", errors=[{"field": "a", "message": "m"}])
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ValidationError)
    assert back.errors == err.errors


def test_malformed_wire_dict_is_tolerated() -> None:
    err = OrganelleError.from_wire({"code": "organelle.validation", "details": "oops"})
    assert isinstance(err, ValidationError)
    assert err.details == {"value": "oops"}
