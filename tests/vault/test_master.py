"""Master key sources: an environment variable, a file only its owner can
read, or the output of a command run without a shell and with a timeout;
one at a time; errors name the source and never the key."""

from __future__ import annotations

import base64
import os
import stat
import sys
from pathlib import Path

import pytest

from streams.vault.master import (
    ENV_COMMAND,
    ENV_FILE,
    ENV_KEY,
    MasterKeyError,
    load_master_keys,
    new_master_key,
    parse_master_keys,
)

K1 = new_master_key()
K2 = new_master_key()


def test_a_lone_key_in_the_environment_is_the_default() -> None:
    keys = load_master_keys({ENV_KEY: K1})
    assert keys is not None
    assert keys.ids() == ("default",) and keys.current_id == "default"
    assert keys.get("default") == base64.b64decode(K1)
    assert load_master_keys({}) is None


def test_several_keys_the_last_is_current_hex_and_urlsafe_accepted() -> None:
    raw = base64.b64decode(K2)
    text = f"# keyring\nold:{K1}\nnew:{base64.urlsafe_b64encode(raw).decode().rstrip('=')}, hex:{raw.hex()}\n"
    keys = parse_master_keys(text, "test")
    assert keys.ids() == ("old", "new", "hex") and keys.current_id == "hex"
    assert keys.get("new") == raw == keys.get("hex")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("short", "base64 or 64 hex digits"),
        (base64.b64encode(b"x" * 16).decode(), "must be 32 bytes"),
        (f"{K1},{K2}", "has no id"),
        (f"a:{K1}\na:{K2}", "appears twice"),
        (f"bad id:{K1}", "the id must be"),
    ],
)
def test_malformed_sources_are_refused_without_quoting_them(text: str, message: str) -> None:
    with pytest.raises(MasterKeyError, match=message) as exc:
        parse_master_keys(text, "test")
    for key in (K1, K2):
        assert key not in str(exc.value)


def test_a_file_must_be_its_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text(f"k1:{K1}\n")
    path.chmod(0o600)
    keys = load_master_keys({ENV_FILE: str(path)})
    assert keys is not None and keys.ids() == ("k1",)
    path.chmod(0o640)
    with pytest.raises(MasterKeyError, match=r"readable or writable by others \(mode 0640\); chmod 600"):
        load_master_keys({ENV_FILE: str(path)})
    path.chmod(0o600)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(MasterKeyError, match="cannot open"):
        load_master_keys({ENV_FILE: str(link)})
    with pytest.raises(MasterKeyError, match="cannot open"):
        load_master_keys({ENV_FILE: str(tmp_path / "missing")})


def test_a_command_prints_the_keys_and_its_stderr_is_never_read(tmp_path: Path) -> None:
    script = tmp_path / "kms.py"
    script.write_text(
        "import sys\n"
        f"sys.stderr.write('debug: fetched {K2}\\n')\n"
        f"print('k1:{K1}')\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    keys = load_master_keys({ENV_COMMAND: f"{sys.executable} {script} 0"})
    assert keys is not None and keys.get("k1") == base64.b64decode(K1)
    with pytest.raises(MasterKeyError) as exc:
        load_master_keys({ENV_COMMAND: f"{sys.executable} {script} 3"})
    assert "exited with status 3" in str(exc.value)
    assert K2 not in str(exc.value) and "debug" not in str(exc.value)


def test_a_command_runs_without_a_shell_and_times_out(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # Shell syntax is passed to the program as arguments, never interpreted.
    with pytest.raises(MasterKeyError):
        load_master_keys({ENV_COMMAND: f"echo {K1}; touch {marker}"})
    assert not marker.exists()
    with pytest.raises(MasterKeyError, match=r"no answer within 0.5 s"):
        load_master_keys({ENV_COMMAND: f"{sys.executable} -c 'import time; time.sleep(5)'"}, timeout_s=0.5)
    with pytest.raises(MasterKeyError, match="cannot run"):
        load_master_keys({ENV_COMMAND: str(tmp_path / "no-such-tool")})


def test_one_source_at_a_time() -> None:
    with pytest.raises(MasterKeyError, match=f"not {ENV_FILE} and {ENV_KEY}"):
        load_master_keys({ENV_KEY: K1, ENV_FILE: "/nonexistent"})


def test_the_file_check_uses_the_real_owner(tmp_path: Path) -> None:
    if os.getuid() == 0:
        path = tmp_path / "other.key"
        path.write_text(K1)
        path.chmod(0o600)
        os.chown(path, 65534, 65534)
        with pytest.raises(MasterKeyError, match="owned by another user"):
            load_master_keys({ENV_FILE: str(path)})
    else:
        pytest.skip("needs root to give the file to another user")


def test_nexus_vault_keygen_and_check(tmp_path: Path) -> None:
    import subprocess

    run = [sys.executable, "-m", "nexus.cli", "vault"]
    key = subprocess.run([*run, "keygen"], capture_output=True, text=True, check=True).stdout.strip()
    assert len(base64.b64decode(key)) == 32
    path = tmp_path / "master.key"
    path.write_text(f"old:{K1}\nnew:{key}\n")
    path.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_VAULT_")}
    done = subprocess.run(
        [*run, "check"], capture_output=True, text=True, env={**env, ENV_FILE: str(path)}, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "keys: old, new (current: new)" in done.stdout
    assert key not in done.stdout + done.stderr and K1 not in done.stdout + done.stderr
    path.chmod(0o644)
    done = subprocess.run(
        [*run, "check"], capture_output=True, text=True, env={**env, ENV_FILE: str(path)}, check=False
    )
    assert done.returncode == 2 and "chmod 600" in done.stderr


def test_nexus_up_generates_a_master_key_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nexus.up import ensure_vault_master_key

    for name in (ENV_KEY, ENV_FILE, ENV_COMMAND):
        # set then deleted: monkeypatch restores what was there before (the
        # function under test sets ENV_FILE itself)
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    ensure_vault_master_key(tmp_path)
    path = tmp_path / "secrets" / "vault-master-key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and os.environ[ENV_FILE] == str(path.resolve())
    first = load_master_keys()
    assert first is not None
    ensure_vault_master_key(tmp_path)  # the same key on the next start
    again = load_master_keys()
    assert again is not None and again.keys == first.keys
    # A source the operator set wins: nothing is generated.
    monkeypatch.delenv(ENV_FILE)
    monkeypatch.setenv(ENV_KEY, new_master_key())
    ensure_vault_master_key(tmp_path / "other")
    assert not (tmp_path / "other").exists()
