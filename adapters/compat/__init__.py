"""The OpenAI-compatible providers: one table of data (base URL, per-model
quirks, usage dialect, capabilities) over the OpenAI codec."""

from adapters.compat.codec import CompatCodec
from adapters.compat.table import PROVIDERS, CompatProvider

__all__ = ["PROVIDERS", "CompatCodec", "CompatProvider"]
