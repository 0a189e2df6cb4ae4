"""Config as code over the API: POST /api/admin/config/import (a NexusConfig
file as YAML or JSON; ?dry_run=true shows the diff, ?prune=true deletes
what the file does not hold) and GET /api/admin/config/export (the state as
a file that imports back to it).  ``nexus hub import/export`` call these."""

from __future__ import annotations

import msgspec
import msgspec.yaml
from aiohttp import web

from hub.api.errors import ApiError, from_domain
from hub.api.http import Call, json_response
from hub.commands import DomainError
from hub.compile import compile_config
from hub.iam import resource_nrn
from hub.importer import apply_plan, plan
from streams.config_base import ConfigError
from streams.config_validation import parse_config

CONFIG_NRN = resource_nrn("config", "", "nexus")


class ImportResult(msgspec.Struct, kw_only=True):
    dry_run: bool
    changes: list[str]  # "+ org acme", "~ model gpt-4o", "- hook old"
    applied: int  # changes stored (0 on a dry run)


def _flag(call: Call, name: str) -> bool:
    value = call.query(name, "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ApiError("invalid_query", f"{name}: true or false", field=name)
    return value in ("true", "1", "yes")


async def import_config(call: Call) -> web.Response:
    dry_run, prune = _flag(call, "dry_run"), _flag(call, "prune")
    raw = await call.raw_body()
    call.authorize(CONFIG_NRN)
    try:
        cfg = parse_config(raw, source="the file")
    except ConfigError as exc:
        text = str(exc).removeprefix("the file: ")
        raise ApiError("invalid_field", text, field=text.split(":", 1)[0] if ":" in text else None) from None
    changes = plan(call.state, cfg, prune=prune)
    call.before = msgspec.to_builtins(compile_config(call.state, for_nodes=False)[0])
    applied = 0
    if not dry_run and changes:
        assert call.principal is not None
        try:
            applied = await apply_plan(
                call.hub.control, changes, actor=call.principal.nrn, request_id=call.request_id
            )
        except DomainError as exc:
            raise from_domain(exc) from None
        call.state = call.hub.control.state
        call.config_seq = call.state.seq
        call.command_id = call.request_id
    call.after = msgspec.to_builtins(compile_config(call.state, for_nodes=False)[0])
    return json_response(
        ImportResult(dry_run=dry_run, changes=[c.describe() for c in changes], applied=applied)
    )


async def export_config(call: Call) -> web.Response:
    call.authorize(CONFIG_NRN)
    cfg, _ = compile_config(call.state, for_nodes=False)
    body = b"# nexus hub export: the Hub's state at CONFIG sequence %d\n" % call.state.seq
    body += msgspec.yaml.encode(cfg)
    return web.Response(body=body, content_type="application/yaml", headers={"Cache-Control": "no-store"})
