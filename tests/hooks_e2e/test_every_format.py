"""Every ingress format is screened on the text it carries (issue 12 item 1).

Each case sends a card number, or a prompt injection, in one place a
format can carry text (a message, an instruction, a tool result, a
Responses input item of any kind, a predicted output, a thinking block, an
embeddings input), through the path that serves it: a same-format
passthrough (the caller's own body goes out), a translation, or a provider's
native Responses API with stored state (``store``, ``previous_response_id``,
a built-in tool).  What the simulated provider received is the proof: the
card redacted, the injection never there.  Then the answers: a native
Responses answer, unary or streamed, goes through the response hooks too."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import pytest

from streams.events import RequestReceived
from tests.hooks_e2e.conftest import BEFORE_LEAK, CARD, INJECTION, LEAKED_WORD, LEAKY_PROMPT, HooksStack

pytestmark = pytest.mark.integration

TOKEN = "[REDACTED_CREDIT_CARD]"
NATIVE = {"store": True}  # only a native Responses target serves these
PREVIOUS = {"previous_response_id": "resp_earlier"}
SEARCH = {"tools": [{"type": "web_search"}]}


def _carrying(text: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """One request per place a format carries text: (path, body)."""
    user = [{"role": "user", "content": "hello"}]
    return {
        "chat-user": (
            "/chat/completions",
            {"model": "sim-small", "messages": [{"role": "user", "content": text}]},
        ),
        "chat-tool-result": (
            "/chat/completions",
            {
                "model": "sim-small",
                "messages": [
                    *user,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": text},
                ],
            },
        ),
        "chat-prediction": (
            "/chat/completions",
            {"model": "sim-small", "messages": user, "prediction": {"type": "content", "content": text}},
        ),
        "messages-translated-system": (
            "/messages",
            {"model": "sim-small", "max_tokens": 20, "system": text, "messages": user},
        ),
        "messages-passthrough-tool-result": (
            "/messages",
            {
                "model": "claude-small",
                "max_tokens": 20,
                "messages": [
                    *user,
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": text}],
                    },
                ],
            },
        ),
        "messages-passthrough-thinking": (
            "/messages",
            {
                "model": "claude-small",
                "max_tokens": 20,
                "messages": [
                    *user,
                    {
                        "role": "assistant",
                        "content": [{"type": "thinking", "thinking": text, "signature": "s"}],
                    },
                    *user,
                ],
            },
        ),
        "count-tokens-passthrough": (
            "/messages/count_tokens",
            {"model": "claude-small", "messages": [{"role": "user", "content": text}]},
        ),
        "responses-input": ("/responses", {"model": "sim-small", "input": text}),
        "responses-store": ("/responses", {"model": "sim-small", "input": text, **NATIVE}),
        "responses-previous-id-tool-output": (
            "/responses",
            {
                "model": "sim-small",
                **PREVIOUS,
                "input": [{"type": "function_call_output", "call_id": "c1", "output": text}],
            },
        ),
        "responses-web-search-instructions": (
            "/responses",
            {"model": "sim-small", **SEARCH, "instructions": text, "input": "hello"},
        ),
        "responses-store-parts-and-calls": (
            "/responses",
            {
                "model": "sim-small",
                **NATIVE,
                "input": [
                    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": text}]},
                    {
                        "type": "function_call",
                        "call_id": "c1",
                        "name": "f",
                        "arguments": msgspec.json.encode({"q": text}).decode(),
                    },
                    {"type": "function_call_output", "call_id": "c1", "output": "done"},
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
                ],
            },
        ),
        "responses-translated-tool-output": (
            "/responses",
            {
                "model": "claude-small",
                "input": [
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": text},
                ],
            },
        ),
        "embeddings": ("/embeddings", {"model": "embedder", "input": ["plain", text]}),
        # Gemini: the model is in the URL; to a Gemini provider and translated.
        "gemini-user-text": (f"{GEMINI}/gem-small:generateContent", {"contents": [_said("user", text)]}),
        "gemini-translated-system-instruction": (
            f"{GEMINI}/sim-small:generateContent",
            {"systemInstruction": {"parts": [{"text": text}]}, "contents": [_said("user", "hello")]},
        ),
        "gemini-function-call-args-and-response": (
            f"{GEMINI}/sim-small:generateContent",
            {
                "contents": [
                    _said("user", "hello"),
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"q": text}}}]},
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "f", "response": {"out": text}}}],
                    },
                ]
            },
        ),
        "gemini-stream-snake-case": (
            f"{GEMINI}/gem-small:streamGenerateContent?alt=sse",
            {"system_instruction": {"parts": [{"text": text}]}, "contents": [_said("user", "hello")]},
        ),
        "gemini-count-tokens": (f"{GEMINI}/gem-small:countTokens", {"contents": [_said("user", text)]}),
        # Gemini embeddings: to a Gemini provider and translated to OpenAI's.
        "gemini-embed-content": (
            f"{GEMINI}/gem-embed:embedContent",
            {"content": {"parts": [{"text": text}]}},
        ),
        "gemini-embed-title": (
            f"{GEMINI}/gem-embed:embedContent",
            {"content": {"parts": [{"text": "plain"}]}, "taskType": "RETRIEVAL_DOCUMENT", "title": text},
        ),
        "gemini-translated-batch-embed": (
            f"{GEMINI}/embedder:batchEmbedContents",
            {"requests": [{"content": {"parts": [{"text": "plain"}]}}, {"content": _said("user", text)}]},
        ),
    }


GEMINI = "/v1beta/models"


def _said(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"text": text}]}


async def _post(hx: HooksStack, key: str, path: str, body: Any) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    url = hx.root + path if path.startswith(GEMINI) else hx.url + path
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        return r.status, await r.text(), r.headers.get("x-nexus-request-id", "")


@pytest.mark.parametrize("case", list(_carrying("")))
async def test_a_card_number_is_redacted_before_the_provider_sees_it(hx: HooksStack, case: str) -> None:
    path, body = _carrying(f"card {CARD} on file")[case]
    before = hx.sim.state.recorder.count
    status, text, rid = await _post(hx, hx.keys.full, path, body)
    assert status == 200, text
    requests = hx.sim.state.recorder.snapshot()["requests"]
    assert len(requests) > before, "the provider was not called"
    sent = msgspec.json.encode(requests[-1].body).decode()
    assert CARD not in sent and TOKEN in sent, sent
    # What is recorded is the redacted request too.
    received = next(e for e in hx.events.of(rid) if isinstance(e, RequestReceived))
    assert received.body is not None and received.body.redacted and received.body.inline is not None
    assert CARD.encode() not in received.body.inline


@pytest.mark.parametrize("case", list(_carrying("")))
async def test_a_prompt_injection_is_blocked_wherever_it_is_carried(hx: HooksStack, case: str) -> None:
    path, body = _carrying(INJECTION)[case]
    before = hx.sim.state.recorder.count
    status, text, _ = await _post(hx, hx.keys.full, path, body)
    assert status == 403, text
    assert "prompt-injection" in text and INJECTION not in text
    assert hx.sim.state.recorder.count == before  # the provider never saw it


def _events(text: str) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


async def test_a_stored_responses_answer_is_blocked_by_the_response_hooks(hx: HooksStack) -> None:
    body = {"model": "sim-small", "input": LEAKY_PROMPT, **NATIVE}
    status, text, _ = await _post(hx, hx.keys.resp, "/responses", body)
    assert status == 403 and "The response was blocked" in text and LEAKED_WORD not in text
    assert hx.sim.state.recorder.snapshot()["requests"][-1].path == "/v1/responses"


async def test_a_stored_responses_stream_is_cut_by_the_response_hooks(hx: HooksStack) -> None:
    body = {"model": "sim-small", "input": LEAKY_PROMPT, "stream": True, **NATIVE}
    status, text, _ = await _post(hx, hx.keys.resp, "/responses", body)
    assert status == 200
    events = _events(text)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["id"] == events[0]["response"]["id"]  # the provider's id, kept
    assert "blocked by compliance policy" in events[-1]["response"]["error"]["message"]
    released = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert released and BEFORE_LEAK.startswith(released)  # what came before, and not the word
    assert LEAKED_WORD not in text.replace("leaked-word", "")


async def test_a_stored_responses_answer_is_redacted_unary_and_streamed(hx: HooksStack) -> None:
    body = {"model": "sim-small", "input": LEAKY_PROMPT, **NATIVE}
    status, text, _ = await _post(hx, hx.keys.redact, "/responses", body)
    assert status == 200, text
    answer = msgspec.json.decode(text)
    said = answer["output"][0]["content"][0]["text"]
    assert said.startswith(BEFORE_LEAK) and "[REDACTED_LEAKED_WORD]" in said and LEAKED_WORD not in said

    status, text, _ = await _post(hx, hx.keys.redact, "/responses", {**body, "stream": True})
    assert status == 200
    events = _events(text)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done = next(e for e in events if e["type"] == "response.output_text.done")
    final = events[-1]["response"]["output"][0]["content"][0]["text"]
    assert streamed == done["text"] == final == said
    assert events[-1]["response"]["id"] == events[0]["response"]["id"]
