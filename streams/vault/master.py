"""The master keys: where the Hub and every node get the root of the vault.

One source per process, from the first of these that is configured:

- ``NEXUS_VAULT_MASTER_KEY_COMMAND``: a command (split like a shell would,
  but run without one) whose standard output holds the keys.  It stands in
  for a KMS: whatever asks the KMS for the key prints it.  It runs with a
  timeout; its standard error is never read or logged (a KMS tool's
  diagnostics can quote what it was given).
- ``NEXUS_VAULT_MASTER_KEY_FILE``: a file readable by its owner only
  (``0600``), owned by the user the process runs as.
- ``NEXUS_VAULT_MASTER_KEY``: the keys themselves in the environment.

The text holds one key, or several as ``id:key`` entries (one per line, or
comma separated); ``#`` starts a comment line.  A key is 32 random bytes,
written in base64 or as 64 hex digits (``nexus vault keygen`` prints one).
The *last* entry is the current one: new key-encryption key versions derive
from it; older entries stay so the versions derived from them still open
until they are retired.  A lone key without an id is called ``default``.

No message here ever quotes the text of a key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import shlex
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_KEY = "NEXUS_VAULT_MASTER_KEY"
ENV_FILE = "NEXUS_VAULT_MASTER_KEY_FILE"
ENV_COMMAND = "NEXUS_VAULT_MASTER_KEY_COMMAND"
DEFAULT_ID = "default"
KEY_BYTES = 32
COMMAND_TIMEOUT_S = 10.0
_MAX_TEXT = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HEX = re.compile(r"^[0-9A-Fa-f]{64}$")


class MasterKeyError(Exception):
    """The master key source is missing, unreadable or malformed (the
    message names the source, never the key)."""


@dataclass(frozen=True)
class MasterKeys:
    """Master keys by id, in the order the source gave them."""

    keys: tuple[tuple[str, bytes], ...]
    source: str  # where they came from, for messages ("NEXUS_VAULT_MASTER_KEY_FILE /etc/...")

    @property
    def current_id(self) -> str:
        return self.keys[-1][0]

    def get(self, key_id: str) -> bytes | None:
        for kid, key in self.keys:
            if kid == key_id:
                return key
        return None

    def ids(self) -> tuple[str, ...]:
        return tuple(kid for kid, _ in self.keys)

    def __repr__(self) -> str:  # never the key bytes, even in a traceback's locals
        return f"MasterKeys(ids={self.ids()!r}, source={self.source!r})"


def new_master_key() -> str:
    """A fresh master key, base64 (what ``nexus vault keygen`` prints)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _decode_key(text: str, where: str) -> bytes:
    if _HEX.match(text):
        return bytes.fromhex(text)
    # base64, standard or URL-safe, padding optional
    std = text.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{where}: a key must be base64 or 64 hex digits") from None
    if len(raw) != KEY_BYTES:
        raise MasterKeyError(f"{where}: a key must be {KEY_BYTES} bytes (it decodes to {len(raw)})")
    return raw


def parse_master_keys(text: str, source: str) -> MasterKeys:
    entries: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entries += [e.strip() for e in line.split(",") if e.strip()]
    if not entries:
        raise MasterKeyError(f"{source}: holds no key")
    keys: list[tuple[str, bytes]] = []
    for n, entry in enumerate(entries, 1):
        kid, sep, value = entry.partition(":")
        if not sep:
            if len(entries) > 1:
                raise MasterKeyError(f"{source}: entry {n} has no id (write id:key when there are several)")
            kid, value = DEFAULT_ID, entry
        kid, value = kid.strip(), value.strip()
        if not _ID.match(kid):
            raise MasterKeyError(f"{source}: entry {n}: the id must be 1-64 letters, digits, . _ -")
        if any(k == kid for k, _ in keys):
            raise MasterKeyError(f"{source}: key id {kid!r} appears twice")
        keys.append((kid, _decode_key(value, f"{source}: key {kid!r}")))
    return MasterKeys(tuple(keys), source)


def _from_file(path: str) -> MasterKeys:
    where = f"{ENV_FILE} {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise MasterKeyError(f"{where}: cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MasterKeyError(f"{where}: not a regular file")
        if st.st_mode & 0o077:
            raise MasterKeyError(
                f"{where}: readable or writable by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        if st.st_uid != os.getuid():
            raise MasterKeyError(f"{where}: owned by another user (uid {st.st_uid})")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(_MAX_TEXT + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_TEXT:
        raise MasterKeyError(f"{where}: larger than {_MAX_TEXT} bytes")
    try:
        return parse_master_keys(data.decode(), where)
    except UnicodeDecodeError:
        raise MasterKeyError(f"{where}: not text") from None


def _from_command(command: str, timeout_s: float) -> MasterKeys:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise MasterKeyError(f"{ENV_COMMAND}: cannot split the command: {exc}") from None
    if not argv:
        raise MasterKeyError(f"{ENV_COMMAND}: empty")
    where = f"{ENV_COMMAND} ({Path(argv[0]).name})"
    try:
        # An operator's command, run without a shell on purpose.
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # never read: it may quote key material
            timeout=timeout_s,
            check=False,
            shell=False,
        )
    except subprocess.TimeoutExpired:
        raise MasterKeyError(f"{where}: no answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise MasterKeyError(f"{where}: cannot run: {exc.strerror}") from None
    if done.returncode != 0:
        raise MasterKeyError(f"{where}: exited with status {done.returncode} (its error output is not shown)")
    if len(done.stdout) > _MAX_TEXT:
        raise MasterKeyError(f"{where}: printed more than {_MAX_TEXT} bytes")
    try:
        return parse_master_keys(done.stdout.decode(), where)
    except UnicodeDecodeError:
        raise MasterKeyError(f"{where}: printed something that is not text") from None


def load_master_keys(
    env: Mapping[str, str] | None = None, *, timeout_s: float = COMMAND_TIMEOUT_S
) -> MasterKeys | None:
    """The master keys from the configured source; None when none is
    configured (the vault is then unavailable: sealed credentials cannot be
    opened, environment variables still work).  Blocking: it may run a
    command (call it in a thread from a running event loop)."""
    env = os.environ if env is None else env
    configured = [name for name in (ENV_COMMAND, ENV_FILE, ENV_KEY) if env.get(name)]
    if len(configured) > 1:
        raise MasterKeyError(f"set one master key source, not {' and '.join(configured)}")
    if env.get(ENV_COMMAND):
        return _from_command(env[ENV_COMMAND], timeout_s)
    if env.get(ENV_FILE):
        return _from_file(env[ENV_FILE])
    if env.get(ENV_KEY):
        return parse_master_keys(env[ENV_KEY], ENV_KEY)
    return None
