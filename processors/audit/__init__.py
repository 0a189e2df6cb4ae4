"""The tamper-evident audit trail: every stream event, hash-chained into
Postgres (see ``chain`` for the rules, ``verify`` for the check)."""

from processors.audit.embed import start_audit
from processors.audit.processor import AuditProcessor
from processors.audit.verify import VerifyResult, verify

__all__ = ["AuditProcessor", "VerifyResult", "start_audit", "verify"]
