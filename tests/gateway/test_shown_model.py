"""The caller's model name written into answers relayed as the provider
wrote them (ingress/translate/shown_model.py): only the answer's own
``model`` changes, whatever else in the JSON is named "model", however the
stream is cut into reads."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from ingress.translate.shown_model import RelayedStream, ShownModel

NAME = 'my "alias"'  # a name whose JSON needs escapes


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"id": "c1", "model": "prov-1", "choices": []},
            {"id": "c1", "model": 'my "alias"', "choices": []},
            id="chat-completion",
        ),
        pytest.param(
            # The caller's own metadata, echoed before the envelope's model.
            {"metadata": {"model": "mine"}, "model": "prov-1", "output": []},
            {"metadata": {"model": "mine"}, "model": 'my "alias"', "output": []},
            id="nested-model-key-first",
        ),
        pytest.param({"object": "list", "data": []}, {"object": "list", "data": []}, id="no-model"),
        pytest.param({"model": "x\\"}, {"model": 'my "alias"'}, id="escaped-value"),
    ],
)
def test_a_unary_answer_shows_the_callers_name(body: dict[str, Any], expected: dict[str, Any]) -> None:
    # Checked: the first "model" key may be the caller's own (a Responses
    # object's metadata, an Anthropic tool input).
    assert msgspec.json.decode(ShownModel(NAME).checked_document(msgspec.json.encode(body))) == expected


def test_a_stream_rewrites_each_chunk_from_the_bytes_it_learnt() -> None:
    shown = ShownModel(NAME)
    chunk = b'data: {"id":"c1","model":"prov-1","choices":[]}\n\n'
    expected = b'data: {"id":"c1","model":"my \\"alias\\"","choices":[]}\n\n'
    assert [shown.event(chunk) for _ in range(3)] == [expected] * 3
    # A chunk that names another model (a provider switching snapshots
    # mid-stream) is still rewritten.
    assert shown.event(chunk.replace(b"prov-1", b"prov-2")) == expected
    assert shown.event(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"


def test_whitespace_and_non_json_bodies() -> None:
    spaced = b'{\n  "id": "c1",\n  "model" :  "prov-1",\n  "choices": []\n}'
    assert msgspec.json.decode(ShownModel(NAME).document(spaced))["model"] == NAME
    assert ShownModel(NAME).document(b"<html>bad gateway</html>") == b"<html>bad gateway</html>"
    assert ShownModel(NAME).checked_document(b"<html>bad gateway</html>") == b"<html>bad gateway</html>"


def _responses_event(kind: str, response: dict[str, Any]) -> bytes:
    data = msgspec.json.encode({"type": kind, "sequence_number": 0, "response": response})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def test_a_responses_envelope_event_shows_the_callers_name_even_after_an_echoed_model_key() -> None:
    response = {"id": "r1", "tools": [{"type": "function", "parameters": {"model": "s"}}], "model": "prov-1"}
    raw = _responses_event("response.created", response)
    out = RelayedStream(ShownModel(NAME), responses=True)
    data = out.feed(raw) + out.close()
    event = msgspec.json.decode(data.split(b"data: ", 1)[1])
    assert event["response"]["model"] == NAME
    assert event["response"]["tools"][0]["parameters"] == {"model": "s"}
    assert data.startswith(b"event: response.created\n")


def test_output_item_events_are_left_alone() -> None:
    raw = b'event: response.output_item.added\ndata: {"type":"x","item":{"model":"not-the-answer"}}\n\n'
    out = RelayedStream(ShownModel(NAME), responses=True)
    assert out.feed(raw) == raw


def test_a_stream_cut_at_every_byte_shows_the_callers_name_and_nothing_else_changes() -> None:
    events = [
        b'data: {"id":"c1","model":"prov-1","choices":[{"delta":{"content":"the model"}}]}\n\n',
        b'data: {"id":"c1","model":"prov-1","choices":[{"delta":{"content":"\\"model\\": x"}}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(events)
    expected = stream.replace(b'"model":"prov-1"', b'"model":"my \\"alias\\""')
    for cut in range(1, len(stream)):
        relay = RelayedStream(ShownModel(NAME))
        got = relay.feed(stream[:cut]) + relay.feed(stream[cut:]) + relay.close()
        assert got == expected, cut


def test_the_usage_chunk_asked_for_on_the_callers_behalf_is_dropped_at_every_cut() -> None:
    # The gateway forces include_usage on a relayed OpenAI stream to account
    # it; a caller who did not ask must not see the extra chunk.  A content
    # chunk that mentions usage in its text, or carries "usage": null, stays.
    events = [
        b'data: {"id":"c1","model":"prov-1",'
        b'"choices":[{"delta":{"content":"\\"usage\\":{"}}],"usage":null}\n\n',
        b'data: {"id":"c1","model":"prov-1","choices":[{"delta":{},"finish_reason":"stop"}]}\n\n',
        b'data: {"id":"c1","model":"prov-1","choices":[],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(events)
    shown = b'"model":"my \\"alias\\""'
    kept = b"".join(events[:2] + events[3:]).replace(b'"model":"prov-1"', shown)
    for cut in range(1, len(stream)):
        relay = RelayedStream(ShownModel(NAME), drop_usage=True)
        got = relay.feed(stream[:cut]) + relay.feed(stream[cut:]) + relay.close()
        assert got == kept, cut
    relay = RelayedStream(ShownModel(NAME))
    assert relay.feed(stream) == stream.replace(b'"model":"prov-1"', shown)


@pytest.mark.parametrize(
    "error",
    [
        b'data: {"error":{"message":"secret internals","type":"server_error"}}\n\n',
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"x"}}\n\n',
    ],
)
def test_a_providers_error_event_is_never_relayed(error: bytes) -> None:
    before = b'data: {"id":"c1","model":"prov-1","choices":[{"delta":{"content":"hi"}}]}\n\n'
    after = b'data: {"id":"c1","model":"prov-1","choices":[{"delta":{"content":"late"}}]}\n\n'
    relay = RelayedStream(ShownModel(NAME))
    got = relay.until_error(before + error + after)
    assert got == before.replace(b'"model":"prov-1"', b'"model":"my \\"alias\\""')


def test_a_read_that_names_another_model_is_cut_into_events_and_each_patched() -> None:
    relay = RelayedStream(ShownModel(NAME))
    first = b'data: {"id":"c1","model":"prov-1","choices":[{"delta":{"content":"a"}}]}\n\n'
    assert b"prov-1" not in relay.feed(first)
    # Learnt "prov-1"; a later read carries it once and another id once.
    mixed = (
        b'data: {"id":"c1","model":"prov-1","choices":[{"delta":{"content":"b"}}]}\n\n'
        b'data: {"id":"c1","model": "prov-2","choices":[{"delta":{"content":"c"}}]}\n\n'
    )
    out = relay.feed(mixed)
    assert b"prov-1" not in out and b"prov-2" not in out and out.count(b'"model":"my \\"alias\\""') == 2
