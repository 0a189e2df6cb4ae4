"""The vector index on its own (flat and HNSW partitions, removal, expiry),
and the model-versioned namespace."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ingress.cache.semantic import Embedder
from ingress.cache.semantic.cache import namespace
from ingress.cache.semantic.embedder import DIM, MODEL_VERSION
from ingress.cache.semantic.index import VectorIndex
from ingress.cache.store import Entry
from tests.semantic_cache.conftest import make_cache


def unit(rng: np.random.Generator, n: int) -> Any:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(v: Any, rng: np.random.Generator) -> Any:
    q = v + 0.01 * rng.standard_normal(DIM).astype(np.float32)
    return q / np.linalg.norm(q)


@pytest.mark.parametrize("n", [50, 3000], ids=["flat", "hnsw"])
def test_top1_finds_the_stored_vector_only_in_its_partition(n: int) -> None:
    rng = np.random.default_rng(1)
    data = unit(rng, n)
    index = VectorIndex(hnsw_from=2048)
    index.add_many("a", [(f"e{i}", data[i], 1e12) for i in range(n)])
    for i in rng.integers(0, n, 20):
        (eid, sim), *_ = index.search("a", near(data[i], rng))
        assert eid == f"e{i}" and sim > 0.95
    assert index.search("b", data[0]) == []  # another partition sees nothing
    assert (index._parts["a"].hnsw is not None) == (n >= 2048)


@pytest.mark.parametrize("n", [50, 3000], ids=["flat", "hnsw"])
def test_removed_and_expired_entries_are_never_returned(n: int) -> None:
    rng = np.random.default_rng(2)
    data = unit(rng, n)
    now = [1000.0]
    index = VectorIndex(hnsw_from=2048, clock=lambda: now[0])
    index.add_many("a", [(f"e{i}", data[i], 2000.0 if i % 2 else 1500.0) for i in range(n)])
    assert index.remove("e1") and not index.remove("e1")
    assert "e1" not in index
    got = index.search("a", data[1], k=1)
    assert got and got[0][0] != "e1"
    now[0] = 1600.0  # the even ids expired
    got = index.search("a", data[2], k=1)
    assert got and int(got[0][0][1:]) % 2 == 1


def test_a_partition_is_compacted_when_a_quarter_is_dead() -> None:
    rng = np.random.default_rng(3)
    data = unit(rng, 40)
    index = VectorIndex()
    for i in range(40):
        index.add("a", f"e{i}", data[i], 1e12)
    for i in range(10):
        index.remove(f"e{i}")
    part = index._parts["a"]
    assert part.size == 30 and not part.dead and len(index) == 30
    assert index.search("a", data[20])[0][0] == "e20"


def test_the_index_is_bounded() -> None:
    rng = np.random.default_rng(4)
    data = unit(rng, 3)
    index = VectorIndex(max_entries=2)
    assert index.add("a", "e0", data[0], 1e12) and index.add("a", "e1", data[1], 1e12)
    assert not index.add("a", "e2", data[2], 1e12)
    assert index.add("a", "e1", data[1], 1e12)  # a refresh of an entry it holds


class OtherModel:
    """The same vectors under another model version (as after an upgrade)."""

    def __init__(self, real: Embedder) -> None:
        self.real = real
        self.version = "all-MiniLM-L6-v2-onnx-int8@000000000000"

    def embed(self, text: str) -> Any:
        return self.real.embed(text)

    def residue(self, text: str) -> str:
        return self.real.residue(text)


@pytest.mark.integration
async def test_a_new_model_version_never_reads_old_vectors(
    embedder: Embedder, valkey_client: Any, valkey_prefix: str
) -> None:
    assert embedder.version == MODEL_VERSION
    old = make_cache(valkey_client, valkey_prefix, embedder)
    probe = await old.lookup("p", "key:k-1", "What is the capital of France?")
    await old.fill(probe, Entry(kind="response", content_type="application/json", body=b"Paris"))

    new = make_cache(valkey_client, valkey_prefix, OtherModel(embedder))
    await new.catch_up()
    assert new.ns != old.ns and namespace(MODEL_VERSION) in old.ns
    assert len(new.index) == 0
    assert (await new.lookup("p", "key:k-1", "What is the capital of France?")).hit is None
    # the old namespace is untouched (its entries expire on their own)
    assert (await old.lookup("p", "key:k-1", "What is the capital of France?")).hit is not None
    await old.close()
    await new.close()


@pytest.mark.parametrize(
    "bad",
    [
        {"threshold": 0.3},
        {"embed_workers": 0},
        {"embed_timeout_ms": 0},
        {"max_entries": 10},
        {"treshold": 0.9},  # a typo is an error, not a silent default
    ],
    ids=["threshold", "workers", "timeout", "max_entries", "unknown_key"],
)
def test_bad_semantic_config_is_a_clear_error(bad: dict[str, object]) -> None:
    import msgspec

    from streams.config_base import ConfigError
    from streams.config_validation import parse_config

    with pytest.raises(ConfigError, match=r"semantic|treshold"):
        parse_config(msgspec.yaml.encode({"cache": {"semantic": bad}}))


def test_semantic_cache_is_off_unless_configured() -> None:
    from streams.config_validation import parse_config

    assert parse_config(b"cache: {enabled: true}\n").cache.semantic.enabled is False
    sem = parse_config(b"cache: {semantic: {enabled: true}}\n").cache.semantic
    assert (sem.enabled, sem.threshold, sem.allow_cross_model) == (True, 0.93, False)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Why doesn't it print?", "Why does it not print?", True),
        ("I can\u2019t log in", "I cannot log in", True),
        ("Sort without recursion", "Sort with recursion", False),
        ("Convert 5 miles to km", "Convert 5 miles into km", True),
        ("Move 3 to 5", "Move 5 to 3", False),
        ("Call 555-1234", "Call 555-9876", False),
        ("Hello there", "Hi there", True),
    ],
)
def test_numbers_and_negations_must_match(a: str, b: str, same: bool) -> None:
    from ingress.cache.semantic.guard import guard

    assert (guard(a) == guard(b)) is same
