"""The example shop over HTTP: its OpenAPI document is valid and survives schemathesis."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from organelle import Kernel
from organelle.gateway import Gateway
from organelle.gateway._openapi import TOPICS_PATTERN
from organelle.gateway._stream import check_patterns
from tests.gateway.apps import RBAC, RS256_AUTH, Things, serve

ROOT = Path(__file__).resolve().parents[2]
HTTP_TOML = ROOT / "examples" / "shop" / "http.toml"
SHOP = ["pricing", "inventory", "orders", "notifications", "gateway"]


@pytest.fixture
async def shop() -> AsyncIterator[Gateway]:
    overrides = {
        "kernel": {"storage": "memory://"},
        "modules": {"gateway": {"port": 0, "rate_limit": {"default": None}}},
    }
    kernel = Kernel.from_config(HTTP_TOML, overrides=overrides, only=SHOP)
    async with kernel:
        gateway = kernel.module("gateway")
        assert isinstance(gateway, Gateway)
        yield gateway


async def test_shop_schema_is_valid_openapi_31(shop: Gateway) -> None:
    async with httpx.AsyncClient(base_url=shop.url) as client:
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert {"/prices/{sku}", "/inventory/{sku}", "/orders", "/shop/{sku}", "/events"} <= set(
        spec["paths"]
    )
    order = spec["paths"]["/orders"]["post"]
    assert order["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "customer",
        "lines",
    ]
    assert "OrderLine" in spec["components"]["schemas"]
    assert docs.status_code == 200
    assert "openapi.json" in docs.text
    assert "http://" not in docs.text.replace("http://127", "")  # no CDN: assets ship inline
    assert "default-src 'none'" in docs.headers["content-security-policy"]


async def test_secured_schema_is_valid_and_declares_security() -> None:
    gateway = {"auth": RS256_AUTH, "rbac": RBAC, "expose": ["things.*"]}
    async with serve(Things, gateway=gateway) as (_, client):
        spec = (await client.get("/openapi.json")).json()
    validate(spec)
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["paths"]["/whoami"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in spec["paths"]["/things/{id}"]["get"]
    params = {p["name"]: p for p in spec["paths"]["/whoami"]["get"]["parameters"]}
    assert params["x-tenant"]["in"] == "header"


@pytest.mark.timeout(90)
async def test_schemathesis_finds_no_500_and_responses_conform(
    shop: Gateway, tmp_path: Path
) -> None:
    st = Path(sys.executable).parent / "st"
    command = [str(st)] if st.exists() else [sys.executable, "-m", "schemathesis.cli"]
    proc = await asyncio.create_subprocess_exec(
        *command,
        "run",
        f"{shop.url}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance,negative_data_rejection,"
        "positive_data_acceptance",
        "--max-examples",
        "15",
        "--seed",
        "7",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "5",
        # the event stream stays open until the client leaves: every valid ?topics= would
        # wait out the timeout (its schema is checked below, without streaming)
        "--exclude-path",
        "/events",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        cwd=tmp_path,  # schemathesis keeps a .schemathesis/ folder in its working directory
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 80)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]


async def test_oversized_bodies_keep_memory_bounded(shop: Gateway) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    big = b"x" * (8 * 1024 * 1024)
    async with httpx.AsyncClient(base_url=shop.url, timeout=10) as client:
        for _ in range(10):
            r = await client.post(
                "/orders", content=big, headers={"content-type": "application/json"}
            )
            assert r.status_code == 413

            async def stream() -> AsyncIterator[bytes]:
                for _ in range(64):
                    yield b"y" * (128 * 1024)

            r = await client.post("/orders", content=stream())
            assert r.status_code == 413
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50


@settings(max_examples=300, deadline=None)
@given(st.from_regex(TOPICS_PATTERN, fullmatch=True))
def test_every_topics_value_the_schema_allows_is_accepted(value: str) -> None:
    """What the stream's ``?topics=`` schema admits, the stream takes (positive data)."""
    patterns = tuple(p for p in value.split(",") if p)
    assert check_patterns(patterns) == patterns


@pytest.mark.parametrize("value", ["", ",", "a..b", "a.>.b", "a b", ",".join(["a"] * 33)])
def test_the_topics_schema_refuses_what_the_stream_refuses(value: str) -> None:
    assert re.fullmatch(TOPICS_PATTERN, value) is None
