"""The event contract as an AsyncAPI document (FastStream): every event type
defined in streams/ has a channel on its subject and its payload schema,
field for field; every reference resolves; ``nexus streams asyncapi``
prints it.  A new event type that is not in the catalog fails here."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

import streams
from streams.faststream_app import config_event_types, contract, event_types
from streams.topology import Topology

REPO = Path(__file__).resolve().parents[2]


def _defined_event_types() -> dict[str, type]:
    """Every tagged msgspec Struct of the streams package's event modules,
    found by walking the modules (not from the catalog the document uses)."""
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(streams.__path__):
        if not info.name.startswith("events"):
            continue
        module = importlib.import_module(f"streams.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, msgspec.Struct):
                continue
            tag = cls.__struct_config__.tag
            if tag is not None and cls.__struct_config__.tag_field == "type":
                found[str(tag)] = cls
    # The envelopes (Event, ConfigEvent) are bases, not types on the wire.
    return {
        t: c for t, c in found.items() if not any(o is not c and issubclass(o, c) for o in found.values())
    }


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return own + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def test_every_event_type_defined_in_streams_is_in_the_document_with_its_fields() -> None:
    topology = Topology(prefix="ACME")
    doc = contract(topology, server="nats://nats.internal:4222")
    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["development"]["host"] == "nats.internal:4222"
    defined = _defined_event_types()
    assert len(defined) >= 20, sorted(defined)
    schemas = doc["components"]["schemas"]
    config_refs = {r["$ref"] for r in schemas["config:Message:Payload"]["oneOf"]}
    for tag, cls in sorted(defined.items()):
        name = cls.__name__
        if cls in config_event_types():
            assert f"#/components/schemas/{name}" in config_refs, f"{tag}: not in the config channel"
        else:
            channel = doc["channels"].get(tag)
            assert channel is not None, f"{tag} ({name}) has no channel: add it to streams.catalog.AnyEvent"
            subject = (
                topology.admin_subject(tag) if tag.startswith("admin.") else topology.traffic_subject(tag)
            )
            assert channel["address"] == subject
            assert schemas[f"{tag}:Message:Payload"] == {"$ref": f"#/components/schemas/{name}"}
            assert doc["operations"][tag]["action"] == "send"
        schema = schemas[name]
        assert set(schema["properties"]) == {"type", *cls.__struct_fields__}, tag
        assert schema["properties"]["type"] == {"enum": [tag]}
    assert len(event_types()) + len(config_event_types()) == len(defined)
    for ref in _refs(doc):
        _resolve(doc, ref)  # raises on a dangling reference
    assert doc["channels"]["deadletter"]["address"] == "acme.deadletter.>"
    assert doc["channels"]["config"]["address"] == topology.config_wildcard


def test_nexus_streams_asyncapi_prints_the_document(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "streams", "asyncapi", "--stream-prefix", "ACME"],
        capture_output=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed == json.loads(msgspec.json.encode(contract(Topology(prefix="ACME"))))
    target = tmp_path / "contract.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "streams", "asyncapi", "--yaml", "--output", str(target)],
        capture_output=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert msgspec.yaml.decode(target.read_bytes())["channels"]["request.received"]["address"] == (
        "nexus.traffic.request.received"
    )
