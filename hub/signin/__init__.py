"""Signing in to the Hub: password hashes, the login guard (throttling and
lockout, shared by replicas), sessions (idle and absolute timeouts,
server-side revocation, CSRF tokens bound to them).

The HTTP side (auth routes, cookies, CSRF checks) is hub/api/signin.py and
hub/api/http.py; what this package holds does no HTTP.
"""
