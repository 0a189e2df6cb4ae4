"""What every config section is built on: the one error type and the strict
base Struct.

Kept apart from the sections so that a section module and the root schema
(``streams.config``) can both import them at the top: before, each section
reached back into ``streams.config`` for ``ConfigError`` at call time, an
import cycle hidden in function bodies.
"""

from __future__ import annotations

import msgspec


class ConfigError(ValueError):
    """A configuration problem, with the path of the offending field."""


class Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Unknown keys are errors everywhere in the file: a typo must never
    silently disable a control."""


def field_error(exc: msgspec.ValidationError, where: str) -> ConfigError:
    """A msgspec error ("Expected `int`, got `str` - at `$.max_requests`")
    as a ConfigError naming the field under ``where``."""
    text = str(exc)
    if " - at `$" in text:
        msg, _, path = text.partition(" - at `$")
        return ConfigError(f"{where}{path.rstrip('`')}: {msg}")
    return ConfigError(f"{where}: {text}")
