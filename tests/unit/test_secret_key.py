"""The token signing key: MAILBOT_SECRET wins, else a key file made once and reused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mailbot.agents.secret_key import KEY_FILE, MIN_SECRET_CHARS, load_key, signer_for
from mailbot.agents.tokens import MIN_SECRET_BYTES
from mailbot.errors import ConfigError
from mailbot.settings import Settings, load_settings

GOOD_SECRET = "a-shared-secret-for-every-daemon"


def _settings(state_dir: Path, **env: str) -> Settings:
    return load_settings({"MAILBOT_STATE_DIR": str(state_dir), **env})


# -- MAILBOT_SECRET --------------------------------------------------------------------------


def test_mailbot_secret_wins_and_no_file_is_made(tmp_path: Path) -> None:
    key = load_key(_settings(tmp_path, MAILBOT_SECRET=GOOD_SECRET))
    assert key == GOOD_SECRET.encode("utf-8")
    assert not (tmp_path / KEY_FILE).exists()


def test_mailbot_secret_wins_over_an_existing_key_file(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("f" * 64 + "\n", encoding="ascii")
    assert load_key(_settings(tmp_path, MAILBOT_SECRET=GOOD_SECRET)) == GOOD_SECRET.encode()


def test_mailbot_secret_file_is_read(tmp_path: Path) -> None:
    credential = tmp_path / "credential"
    credential.write_text(GOOD_SECRET + "\n", encoding="utf-8")
    state = tmp_path / "state"
    key = load_key(_settings(state, MAILBOT_SECRET_FILE=str(credential)))
    assert key == GOOD_SECRET.encode()
    assert not (state / KEY_FILE).exists()


@pytest.mark.parametrize("length", [1, MIN_SECRET_CHARS - 1])
def test_too_short_mailbot_secret_is_a_config_error(tmp_path: Path, length: int) -> None:
    with pytest.raises(ConfigError, match="MAILBOT_SECRET is too short"):
        load_key(_settings(tmp_path, MAILBOT_SECRET="x" * length))
    assert not (tmp_path / KEY_FILE).exists()  # no silent fallback to a key file


def test_shortest_allowed_mailbot_secret(tmp_path: Path) -> None:
    secret = "s" * MIN_SECRET_CHARS
    assert load_key(_settings(tmp_path, MAILBOT_SECRET=secret)) == secret.encode()


# -- the key file -----------------------------------------------------------------------------


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = load_key(settings)
    path = tmp_path / KEY_FILE
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= MIN_SECRET_BYTES  # good enough for TokenSigner
    second = load_key(_settings(tmp_path))
    assert second == first
    assert path.read_text(encoding="ascii").strip().encode("ascii") == first


def test_each_state_dir_gets_its_own_random_key(tmp_path: Path) -> None:
    one = load_key(_settings(tmp_path / "one"))
    two = load_key(_settings(tmp_path / "two"))
    assert one != two


def test_missing_state_dir_is_created(tmp_path: Path) -> None:
    state = tmp_path / "var" / "lib" / "mailbot"
    load_key(_settings(state))
    assert (state / KEY_FILE).is_file()


def test_an_existing_key_file_is_used_as_written(tmp_path: Path) -> None:
    written = "0123456789abcdef0123456789abcdef"
    (tmp_path / KEY_FILE).write_text(f"  {written}\n\n", encoding="ascii")
    assert load_key(_settings(tmp_path)) == written.encode("ascii")


def test_too_short_key_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_text("x" * (MIN_SECRET_CHARS - 1) + "\n", encoding="ascii")
    with pytest.raises(ConfigError) as info:
        load_key(_settings(tmp_path))
    assert str(path) in str(info.value)
    assert "too short" in str(info.value)
    assert path.read_text(encoding="ascii").strip() == "x" * (MIN_SECRET_CHARS - 1)  # kept


def test_empty_key_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("", encoding="ascii")
    with pytest.raises(ConfigError):
        load_key(_settings(tmp_path))


def test_unusable_state_dir_is_a_config_error_naming_mailbot_secret(tmp_path: Path) -> None:
    # A file where the state directory should be: nothing can be created under it (this
    # holds for root as well, unlike a chmod 000 directory).
    state = tmp_path / "state"
    state.write_text("not a directory", encoding="ascii")
    with pytest.raises(ConfigError) as info:
        load_key(_settings(state))
    message = str(info.value)
    assert "MAILBOT_SECRET" in message
    assert KEY_FILE in message


def test_binary_key_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(bytes(range(128, 160)))
    with pytest.raises(ConfigError):
        load_key(_settings(tmp_path))


# -- the signer -------------------------------------------------------------------------------


def test_signer_for_uses_the_loaded_key(tmp_path: Path) -> None:
    a = signer_for(_settings(tmp_path))
    b = signer_for(_settings(tmp_path))
    other = signer_for(_settings(tmp_path, MAILBOT_SECRET=GOOD_SECRET))
    token = a.sign(1042)
    assert b.verify(token) == 1042  # the key file survives a restart
    assert other.verify(token) is None  # another key: tokens no longer verify
