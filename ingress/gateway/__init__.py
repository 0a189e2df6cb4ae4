"""The OpenAI-compatible API gateway (aiohttp on uvloop)."""

from ingress.gateway.app import GatewayServer, create_app, start_gateway

__all__ = ["GatewayServer", "create_app", "start_gateway"]
