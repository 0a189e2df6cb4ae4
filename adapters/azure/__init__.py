"""Azure OpenAI: the OpenAI codec behind deployment URLs."""

from adapters.azure.codec import AzureCodec

__all__ = ["AzureCodec"]
