"""NER entities (PERSON, LOCATION, ...) with presidio's spaCy pipeline.

~55 ms per KB with the small English model, so it never runs on every
request: only for the orgs that ask for it, in a worker thread, under the
hook's timeout.  When asked for and not installed, the node refuses to build
its engine (``PiiHook``) rather than quietly falling back to patterns.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence

from ingress.hooks.pii import offline
from ingress.hooks.types import Span

_lock = threading.Lock()
_engines: dict[str, object] = {}


def available(model: str) -> bool:
    return importlib.util.find_spec(model) is not None


def _analyzer(model: str) -> object:
    # Loading a spaCy model takes about a second; once per process.
    with _lock:
        engine = _engines.get(model)
        if engine is None:
            offline.guard()  # must precede presidio
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.nlp_engine import SpacyNlpEngine
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer

            nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
            nlp.load()
            registry = RecognizerRegistry()
            registry.add_recognizer(SpacyRecognizer())
            engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
            _engines[model] = engine
        return engine


def warm(model: str) -> None:
    _analyzer(model)


def analyze(text: str, model: str, entities: Sequence[str], min_score: float) -> list[Span]:
    """Blocking: call from a worker thread."""
    engine = _analyzer(model)
    results = engine.analyze(  # type: ignore[attr-defined]
        text=text, entities=list(entities), language="en", score_threshold=min_score
    )
    return [Span(r.entity_type, r.start, r.end, float(r.score), r.entity_type) for r in results]
