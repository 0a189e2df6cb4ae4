"""The CONFIG contract's small print: subject tokens, and every section of
NexusConfig held by the Hub (a section added later must be listed, or the
Hub would silently drop it from snapshots and exports)."""

from __future__ import annotations

import msgspec
import pytest

from streams.config import NexusConfig
from streams.events_config import SETTINGS_LISTS, SETTINGS_SECTIONS, SPEC_TYPES
from streams.topology import Topology, subject_token, token_value

# NexusConfig fields that are aggregates of their own (lists of items), or
# not configuration the Hub holds.
_AGGREGATE_FIELDS = {
    "orgs",
    "projects",
    "virtual_keys",
    "providers",
    "models",
    "siem",
    "hub",
    "version",
    "vault",  # credentials and key versions (hub.vault)
}


@pytest.mark.parametrize(
    "value",
    ["plain", "with.dot", "a:b", "a b", "*", ">", "", "ünïcode", "%41", "x_y-z"],
)
def test_subject_tokens_round_trip_and_hold_no_separator(value: str) -> None:
    token = subject_token(value)
    assert token_value(token) == value
    assert token and not any(c in token for c in ".*> \t")


def test_config_subjects_are_one_per_aggregate() -> None:
    t = Topology(prefix="NEXUS")
    assert t.config_subject("virtual-key", "vk.1") == "nexus.config.virtual-key.vk%2E1"
    assert t.config_stream == "NEXUS_CONFIG" and t.config_wildcard == "nexus.config.>"
    assert [s.name for s in t.streams()] == ["NEXUS_TRAFFIC", "NEXUS_ADMIN"]
    assert [s.max_age_s for s in t.control_streams()] == [0]


def test_every_config_section_is_held_by_the_hub() -> None:
    fields = {f.name for f in msgspec.structs.fields(NexusConfig)}
    assert fields - _AGGREGATE_FIELDS == set(SETTINGS_SECTIONS)
    for section, lists in SETTINGS_LISTS.items():
        for name in lists:
            assert name in SETTINGS_SECTIONS[section].__struct_fields__
    assert "settings" not in SPEC_TYPES
