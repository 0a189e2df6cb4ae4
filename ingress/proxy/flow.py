"""One client connection's facts, gathered as it is served and emitted as
a ``proxy.connection`` event when it ends."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from streams.events import Node, Tenant, uuid7
from streams.events_proxy import ProxyConnection

if TYPE_CHECKING:
    from ingress.proxy.blockpage import BlockNotice


class Flow:
    __slots__ = (
        "ai_service",
        "attestation",
        "auth",
        "block",
        "bump_status",
        "bytes_down",
        "bytes_up",
        "client_ip",
        "device_id",
        "handshake_error",
        "id",
        "key_id",
        "method",
        "org",
        "project",
        "reason",
        "relaying",
        "requests",
        "sni",
        "started",
        "status",
        "target_host",
        "target_port",
        "user",
        "user_agent",
    )

    def __init__(self, client_ip: str) -> None:
        self.id = uuid7()
        self.client_ip = client_ip
        self.started = time.monotonic()
        self.bump_status = ""
        self.reason = ""
        # Handed to a relay that outlives the accepting task: the relay
        # finishes the flow when the tunnel ends.
        self.relaying = False
        self.method = "CONNECT"
        self.target_host = ""
        self.target_port = 0
        self.sni = ""
        self.user_agent = ""
        self.ai_service = ""
        self.device_id = ""
        self.attestation = ""
        self.auth = ""
        self.user = ""
        self.org = ""
        self.project = ""
        self.key_id = ""
        self.status = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.requests = 0
        self.handshake_error = ""
        self.block: BlockNotice | None = None  # served the block page instead of a refused CONNECT

    def tenant(self) -> Tenant:
        return Tenant(org_id=self.org, project_id=self.project, key_id=self.key_id, user_id=self.user)

    def event(self, node: Node) -> ProxyConnection:
        return ProxyConnection(
            request_id=self.id,
            node=node,
            tenant=self.tenant(),
            bump_status=self.bump_status,
            reason=self.reason,
            method=self.method,
            target_host=self.target_host,
            target_port=self.target_port,
            sni=self.sni,
            client_ip=self.client_ip,
            user_agent=self.user_agent,
            ai_service=self.ai_service,
            device_id=self.device_id,
            attestation=self.attestation,
            auth=self.auth,
            status=self.status,
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            duration_ms=round((time.monotonic() - self.started) * 1000, 3),
            requests=self.requests,
            handshake_error=self.handshake_error,
        )
