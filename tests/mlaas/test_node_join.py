"""`mlaas join`: a node joins with the head's token, the platform's MLAAS_* environment and
RAY_ADDRESS pinned to the head, and is refused with settings that would keep state of its
own. Nothing is started: the command and environment are checked as built."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from mlaas.cli import app
from mlaas.errors import ConfigurationError
from mlaas.node_join import check_shared_state, join_command, join_env, shown_command
from mlaas.platform import PlatformError
from mlaas.settings import Settings

HEAD = "10.1.2.3:6379"
SECRET = "x9Kq2" * 10  # a JWT secret the printed command must not show


@pytest.fixture
def no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine with no Ray token: an empty home, no token variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def token_file(no_token: Path) -> Path:
    path = no_token / "head_token"
    path.write_text("token-copied-from-the-head\n")
    return path


def shared_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url="postgresql+psycopg://db:5432/mlaas",
        jwt_secret=SecretStr(SECRET),
        storage_uri="s3://bucket/mlaas",
        **overrides,
    )


def test_the_node_joins_the_head_with_its_address_and_resources(tmp_path: Path) -> None:
    settings = shared_settings(
        tmp_path, node_ip_address="10.1.2.4", node_resources={"mlaas_state": 1}, ray_num_cpus=8
    )

    command = join_command(settings, HEAD)

    assert command[1:3] == ["start", f"--address={HEAD}"]
    assert "--node-ip-address=10.1.2.4" in command and "--num-cpus=8" in command
    resources = [arg.split("=", 1)[1] for arg in command if arg.startswith("--resources=")]
    assert [json.loads(r) for r in resources] == [{"mlaas_state": 1}]


def test_a_loopback_node_address_is_left_for_ray_to_find(tmp_path: Path) -> None:
    command = join_command(shared_settings(tmp_path), HEAD)

    assert not [arg for arg in command if arg.startswith("--node-ip-address")]


def test_the_node_environment_carries_the_token_the_settings_and_the_head(
    token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLAAS_DATABASE_URL", "postgresql+psycopg://db:5432/mlaas")

    env = join_env(HEAD, token_file)

    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(token_file.resolve())
    assert env["RAY_ADDRESS"] == HEAD, "its workers find this cluster, not the latest local one"
    assert env["MLAAS_DATABASE_URL"] == "postgresql+psycopg://db:5432/mlaas"


def test_without_a_token_the_join_is_refused_saying_where_to_get_it(no_token: Path) -> None:
    with pytest.raises(PlatformError, match="auth_token"):
        join_env(HEAD)


def test_a_node_with_its_own_database_secret_or_storage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        check_shared_state(Settings(home=tmp_path))

    for setting in ("MLAAS_DATABASE_URL", "MLAAS_JWT_SECRET", "MLAAS_STORAGE_URI"):
        assert setting in refused.value.message
    check_shared_state(shared_settings(tmp_path))  # accepted


def test_the_printed_command_names_the_settings_but_never_a_secret(
    token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLAAS_JWT_SECRET", SECRET)

    line = shown_command(["ray", "start", f"--address={HEAD}"], join_env(HEAD, token_file))

    assert line.startswith(f"RAY_AUTH_MODE=token RAY_ADDRESS={HEAD} ray start --address={HEAD}")
    assert "MLAAS_JWT_SECRET" in line and SECRET not in line


def test_mlaas_join_print_shows_the_ray_start_command(
    token_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("MLAAS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLAAS_HOME", str(tmp_path / "home"))

    result = CliRunner().invoke(
        app, ["join", "--address", HEAD, "--token-file", str(token_file), "--print"]
    )

    assert result.exit_code == 0, result.output
    assert f"ray start --address={HEAD}" in result.output


def test_block_keeps_the_node_in_the_foreground(tmp_path: Path) -> None:
    assert "--block" in join_command(shared_settings(tmp_path), HEAD, block=True)
    assert "--block" not in join_command(shared_settings(tmp_path), HEAD)


def test_gloo_is_pinned_to_the_interface_of_the_nodes_address(tmp_path: Path) -> None:
    import socket

    import psutil

    from mlaas.platform import collective_env

    routable = [(name, a.address) for name, addresses in psutil.net_if_addrs().items()
                for a in addresses if a.family == socket.AF_INET
                and not a.address.startswith("127.")]  # fmt: skip
    if not routable:
        pytest.skip("this machine has no non-loopback IPv4 address")
    name, address = routable[0]

    pinned = collective_env(shared_settings(tmp_path, node_ip_address=address), {})
    on_loopback = collective_env(shared_settings(tmp_path, node_ip_address="127.0.0.1"), {})
    chosen = collective_env(shared_settings(tmp_path, node_ip_address=address),
                            {"GLOO_SOCKET_IFNAME": "eth9"})  # fmt: skip
    elsewhere = collective_env(shared_settings(tmp_path, node_ip_address="203.0.113.77"), {})

    assert pinned == {"GLOO_SOCKET_IFNAME": name}
    assert on_loopback == {} and elsewhere == {}
    assert chosen == {}, "an operator's own choice stays"


def test_the_interface_holding_an_address_is_found() -> None:
    from mlaas.platform import interface_of

    assert interface_of("127.0.0.1") == "lo"
    assert interface_of("203.0.113.77") is None
