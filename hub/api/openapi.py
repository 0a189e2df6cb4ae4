"""The OpenAPI 3.1 document, generated from the route table and the very
msgspec types the handlers decode and encode (``schema_components``), so the
document cannot disagree with the code.  Each operation carries its IAM
action (``x-nexus-action``: null for the public and caller-only routes) and
whether it changes anything (``x-nexus-mutating``)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from hub.api.errors import CODES, ErrorDocument
from hub.api.http import Route

_PARAM = re.compile(r"\{([^}]+)\}")
_REF = "#/components/schemas/{name}"


def _op_id(route: Route) -> str:
    name = getattr(route.handler, "__name__", "op")
    return f"{name}" if name not in ("handler", "get", "put") else f"{route.method.lower()}_{route.path}"


def build_openapi(routes: list[Route], *, version: str = "1") -> dict[str, Any]:
    types: list[Any] = [ErrorDocument]
    for r in routes:
        for t in (r.body, r.response):
            if t is not None and t is not str:
                types.append(t)
    schemas_list, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of: dict[int, dict[str, Any]] = {}
    for t, s in zip(types, schemas_list, strict=True):
        schema_of[id(t)] = s
    error_ref = schema_of[id(ErrorDocument)]
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "operationId": _op_id(r),
            "summary": r.summary,
            "tags": [r.tag] if r.tag else [],
            "x-nexus-action": r.action,
            "x-nexus-mutating": r.mutating,
            "parameters": [],
            "responses": {},
        }
        if r.public:
            op["security"] = []
        for name in _PARAM.findall(r.path):
            op["parameters"].append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )
        for name, desc in r.query:
            op["parameters"].append(
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": desc,
                    "schema": {"type": "string"},
                }
            )
        if r.method in ("PUT", "PATCH", "DELETE") or (r.method == "POST" and "/{" in r.path):
            op["parameters"].append(
                {
                    "name": "If-Match",
                    "in": "header",
                    "required": False,
                    "description": "the version (ETag) the change is based on",
                    "schema": {"type": "string"},
                }
            )
        if r.mutating and not r.public:
            op["parameters"].append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "a retried request with the same key is applied once (the command id)",
                    "schema": {"type": "string"},
                }
            )
        if r.body is not None:
            if r.body is str:
                content = {
                    "application/yaml": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "object"}},
                }
            elif r.method == "PATCH":
                content = {
                    "application/merge-patch+json": {
                        "schema": {"type": "object", "description": "RFC 7396 merge patch of the spec"}
                    }
                }
            else:
                content = {"application/json": {"schema": schema_of[id(r.body)]}}
            op["requestBody"] = {"required": True, "content": content}
        ok: dict[str, Any] = {"description": "OK"}
        if r.response is str:
            ok["content"] = {"application/yaml": {"schema": {"type": "string"}}}
        elif r.response is not None:
            ok["content"] = {"application/json": {"schema": schema_of[id(r.response)]}}
        op["responses"][str(r.status)] = ok
        for code in sorted({c for c in CODES.values() if c >= 400}):
            op["responses"][str(code)] = {
                "description": "error",
                "content": {"application/json": {"schema": error_ref}},
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Nexus Hub admin API",
            "version": version,
            "description": "The control plane's admin API: every change is a command in the CONFIG stream, "
            "every request is IAM-checked and recorded in the audit chain. Errors have one shape "
            "({error: {code, message, field?, current_version?, request_id}}).",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "nexus_session"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
    }
