"""Where a channel's secrets come from: an environment variable or a file
readable by its owner only (the way the vault's master key is read).

The value is read when the worker builds its channels and kept in memory;
it is never logged, never put in an event, and errors name the variable or
the path, never what was in it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from streams.config_base import ConfigError

_MAX_BYTES = 64 * 1024


def read_secret(where: str, *, env_name: str, file: str, env: Mapping[str, str]) -> str:
    """The secret named by ``env_name`` or ``file`` (one of them is set).
    Raises ConfigError when it is missing, empty or the file is open to
    others."""
    if env_name:
        value = env.get(env_name, "")
        if not value:
            raise ConfigError(f"{where}: environment variable {env_name} is not set")
        return value
    if not file:
        raise ConfigError(f"{where}: no secret configured")
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot open {file}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{where}: {file} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{where}: {file} is readable or writable by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        data = os.read(fd, _MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_BYTES:
        raise ConfigError(f"{where}: {file} is larger than a secret ({_MAX_BYTES} bytes at most)")
    try:
        value = data.decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {file} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{where}: {file} is empty")
    return value
