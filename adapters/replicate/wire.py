"""Replicate's prediction object, as far as a chat codec needs it."""

from __future__ import annotations

from typing import Any

import msgspec


class PredictionRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    input: dict[str, Any]
    version: str | None = None  # only on /v1/predictions
    stream: bool | None = None


class Metrics(msgspec.Struct, omit_defaults=True):
    input_token_count: int = 0
    output_token_count: int = 0
    predict_time: float | None = None


class Urls(msgspec.Struct, omit_defaults=True):
    get: str | None = None
    cancel: str | None = None
    stream: str | None = None


class Prediction(msgspec.Struct, omit_defaults=True, kw_only=True):
    id: str
    model: str = ""
    version: str | None = None
    status: str  # starting | processing | succeeded | failed | canceled
    output: Any = None  # LLMs: a list of string pieces (or one string)
    error: Any = None
    metrics: Metrics | None = None
    urls: Urls | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    detail: str | None = None
    title: str | None = None
