"""IAM for the Hub: NRNs, the action catalogue, AWS-style policies, the
evaluator with explanations, managed policies and the grant ceiling.

A pure library: no I/O, no clock (the caller passes ``nexus:CurrentTime``).
docs/iam.md describes the rules; /work/notes/iam-interface.md the API.
"""

from hub.iam.actions import ACTIONS, RESOURCE_TYPES, org_nrn, resource_nrn
from hub.iam.ceiling import Violation, find_violations, grant_violations
from hub.iam.conditions import ContextError
from hub.iam.context_keys import CONTEXT_KEYS, TAG_PREFIXES, ContextKey, lookup_key
from hub.iam.evaluator import (
    AttachedPolicy,
    AuthzRequest,
    Decision,
    Outcome,
    StatementRef,
    allowed_actions,
    evaluate,
    is_allowed,
)
from hub.iam.managed import MANAGED_POLICY_NAMES, managed_policy
from hub.iam.nrn import Nrn, NrnError, in_scope, nrn, nrn_matches, parse_nrn
from hub.iam.policy import VERSION, Policy, PolicyDocument, PolicyError, StatementDocument, parse_policy

__all__ = [
    "ACTIONS",
    "CONTEXT_KEYS",
    "MANAGED_POLICY_NAMES",
    "RESOURCE_TYPES",
    "TAG_PREFIXES",
    "VERSION",
    "AttachedPolicy",
    "AuthzRequest",
    "ContextError",
    "ContextKey",
    "Decision",
    "Nrn",
    "NrnError",
    "Outcome",
    "Policy",
    "PolicyDocument",
    "PolicyError",
    "StatementDocument",
    "StatementRef",
    "Violation",
    "allowed_actions",
    "evaluate",
    "find_violations",
    "grant_violations",
    "in_scope",
    "is_allowed",
    "lookup_key",
    "managed_policy",
    "nrn",
    "nrn_matches",
    "org_nrn",
    "parse_nrn",
    "parse_policy",
    "resource_nrn",
]
