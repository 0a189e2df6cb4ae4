"""The OpenAI-compatible API gateway (aiohttp on uvloop)."""

from ingress.gateway.app import GatewayServer, apply, create_app, start_gateway

__all__ = ["GatewayServer", "apply", "create_app", "start_gateway"]
