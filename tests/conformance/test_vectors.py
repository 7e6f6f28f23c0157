"""The Python client against the committed conformance vectors, and the vectors against the
compiler: a layout or compiler change that moves a byte fails here before any reader ships."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resolverd import Resolver, UnknownNameError
from resolverd.shm_layout import read_header

from .generate import SNAPSHOT, VECTORS, build


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module", params=[False, True], ids=["fingerprint", "strict"])
def resolver(request: pytest.FixtureRequest, vectors_snapshot: Path) -> Any:
    with Resolver.open(vectors_snapshot, strict=request.param, verify=True) as opened:
        yield opened


def test_compiling_the_vector_registry_again_gives_the_committed_bytes() -> None:
    snapshot, text = build()
    committed = SNAPSHOT.read_bytes()
    assert read_header(snapshot).payload_checksum == read_header(committed).payload_checksum
    assert bytes(snapshot) == committed, "regenerate with python -m tests.conformance.generate"
    assert text == VECTORS.read_text(encoding="utf-8")


def test_the_header_is_the_one_the_vectors_describe(
    resolver: Resolver, vectors: dict[str, Any]
) -> None:
    header = resolver.header
    assert [header.version_major, header.version_minor] == vectors["layout_version"]
    assert header.generation == vectors["generation"]
    assert header.file_size == vectors["file_size"] == SNAPSHOT.stat().st_size
    assert f"{header.payload_checksum:#018x}" == vectors["payload_checksum"]
    assert {b: resolver.broker_kind(b) for b in resolver.brokers} == vectors["brokers"]
    assert list(resolver) == vectors["keys"]


def test_every_forward_vector_resolves_to_its_token_or_misses(
    resolver: Resolver, vectors: dict[str, Any]
) -> None:
    kinds = {item["token"] is None for item in vectors["forward"]}
    assert kinds == {True, False}
    for item in vectors["forward"]:
        assert resolver.get_token(item["key"], item["broker"]) == item["token"], item
        if item["token"] is None:
            with pytest.raises(KeyError):
                resolver.token(item["key"], item["broker"])
        assert int(resolver.ordinals([item["key"]])[0]) == item["ordinal"], item


def test_every_reverse_vector_resolves_to_its_key_or_misses(
    resolver: Resolver, vectors: dict[str, Any]
) -> None:
    for item in vectors["reverse"]:
        assert resolver.get_key(item["token"], item["feed"]) == item["key"], item
        if item["key"] is None:
            with pytest.raises(KeyError):
                resolver.key(item["token"], item["feed"])


def test_the_vectors_cover_both_token_kinds_in_both_directions(vectors: dict[str, Any]) -> None:
    forward_kinds = {type(v["token"]) for v in vectors["forward"]}
    reverse_kinds = {type(v["token"]) for v in vectors["reverse"]}
    assert {int, str, type(None)} <= forward_kinds
    assert {int, str} <= reverse_kinds
    feeds_hit = {v["feed"] for v in vectors["reverse"] if v["key"] is not None}
    feeds_missed = {v["feed"] for v in vectors["reverse"] if v["key"] is None}
    assert feeds_hit == feeds_missed == set(vectors["feeds"])
    assert any(not k.isascii() for k in vectors["keys"])


def test_an_unknown_broker_is_the_callers_error_not_a_miss(resolver: Resolver) -> None:
    with pytest.raises(UnknownNameError):
        resolver.get_token("NSE:INFY", "fyers")


def test_strict_batch_ordinals_accept_non_ascii_keys(
    vectors: dict[str, Any], vectors_snapshot: Path
) -> None:
    keys = [item["key"] for item in vectors["forward"]]
    with Resolver.open(vectors_snapshot, strict=True) as strict:
        assert strict.ordinals(keys).tolist() == [item["ordinal"] for item in vectors["forward"]]
