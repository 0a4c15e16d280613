"""`mlaas up` can start a head other machines join: the node address, dashboard host and
resources reach `ray start`, the port checks look where Ray will listen, and cluster mode
refuses a head nobody can join. No Ray is started here."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlaas import platform
from mlaas.cli import app
from mlaas.cluster_mode import CHECKS, HEAD_CHECKS, cluster_mode_problems
from mlaas.errors import ConfigurationError
from mlaas.placement import platform_actor_options, require_offered
from mlaas.platform import PlatformError, address_problem, head_address, head_command
from mlaas.settings import Settings

NOT_THIS_MACHINE = "192.0.2.10"  # TEST-NET-1: never an address of a test machine


def test_the_head_listens_on_the_node_address_and_dashboard_host_it_is_given(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path, node_ip_address="10.1.2.3", dashboard_host="0.0.0.0",
                        node_resources={"mlaas_state": 1}, ray_port=7000)

    command = head_command(settings)

    assert "--node-ip-address=10.1.2.3" in command
    assert "--dashboard-host=0.0.0.0" in command
    resources = [arg.split("=", 1)[1] for arg in command if arg.startswith("--resources=")]
    assert [json.loads(r) for r in resources] == [{"mlaas_state": 1}]
    assert head_address(settings) == "10.1.2.3:7000"


def test_the_default_head_stays_on_loopback_as_before(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)

    command = head_command(settings)

    assert "--node-ip-address=127.0.0.1" in command and "--dashboard-host=127.0.0.1" in command
    assert not [arg for arg in command if arg.startswith("--resources")]
    assert head_address(settings) == "127.0.0.1:6379"


def test_the_head_port_check_looks_at_the_node_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", 0))  # another loopback address: only a check there sees it
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(home=tmp_path, node_ip_address="127.0.0.2", ray_port=port)

        with pytest.raises(PlatformError) as refused:
            platform._check_head_ports(settings)

    assert f"Port {port} on 127.0.0.2" in refused.value.message
    assert "MLAAS_RAY_PORT" in refused.value.message


def test_an_address_of_another_machine_is_refused_naming_the_setting(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, node_ip_address=NOT_THIS_MACHINE)

    with pytest.raises(PlatformError, match="MLAAS_NODE_IP_ADDRESS=192.0.2.10"):
        platform._check_head_ports(settings)
    assert address_problem("0.0.0.0", "MLAAS_HOST") is None
    assert address_problem("127.0.0.1", "MLAAS_HOST") is None


def test_cluster_mode_refuses_a_head_no_other_node_can_join_or_submit_to(
    tmp_path: Path,
) -> None:
    loopback = Settings(home=tmp_path, cluster_mode=True)
    routable = Settings(home=tmp_path, cluster_mode=True, node_ip_address="10.1.2.3",
                        dashboard_host="0.0.0.0")

    problems = cluster_mode_problems(loopback, alive_nodes=1, checks=HEAD_CHECKS)

    assert [p for p in problems if p.startswith("MLAAS_NODE_IP_ADDRESS=127.0.0.1")]
    assert [p for p in problems if p.startswith("MLAAS_DASHBOARD_HOST=127.0.0.1")]
    assert cluster_mode_problems(routable, alive_nodes=1, checks=HEAD_CHECKS) == []
    assert not set(HEAD_CHECKS) & set(CHECKS), "replicas never run the head's checks"


def test_the_url_of_a_proxy_on_every_interface_is_the_node_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLAAS_URL", raising=False)

    default = Settings(home=tmp_path)
    every_interface = Settings(home=tmp_path, host="0.0.0.0", node_ip_address="10.1.2.3")
    monkeypatch.setenv("MLAAS_URL", "https://mlaas.example.com/")
    overridden = Settings(home=tmp_path, host="0.0.0.0")

    assert default.url == "http://127.0.0.1:8000"
    assert every_interface.url == "http://10.1.2.3:8000"
    assert overridden.url == "https://mlaas.example.com"


def test_replicas_get_the_placement_and_timeouts_mlaas_up_read(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, platform_actor_resources={"mlaas_state": 0.001},
                        actor_call_timeout_s=7, training_driver_num_cpus=0.5)

    config = platform.serve_config(settings)

    for application in config["applications"]:
        passed = application["args"]["settings"]
        assert passed["platform_actor_resources"] == {"mlaas_state": 0.001}
        assert passed["actor_call_timeout_s"] == 7
        assert passed["training_driver_num_cpus"] == 0.5


def test_platform_actors_are_placed_by_ray_unless_a_resource_is_configured(
    tmp_path: Path,
) -> None:
    pinned = Settings(home=tmp_path, platform_actor_resources={"mlaas_state": 0.001})

    assert platform_actor_options(Settings(home=tmp_path)) == {}
    assert platform_actor_options(pinned) == {"resources": {"mlaas_state": 0.001}}


def test_up_refuses_actor_resources_no_node_offers(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, platform_actor_resources={"mlaas_state": 0.001})

    with pytest.raises(ConfigurationError) as refused:
        require_offered(settings, {"CPU": 4.0})
    require_offered(settings, {"CPU": 4.0, "mlaas_state": 1.0})  # offered: accepted

    assert "MLAAS_NODE_RESOURCES='{\"mlaas_state\": 1}'" in refused.value.message


def test_up_with_a_node_address_of_another_machine_fails_before_starting_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("MLAAS_")] + ["RAY_ADDRESS"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLAAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLAAS_NODE_IP_ADDRESS", "")  # `up` sets it from its flag; restored after
    monkeypatch.setattr(platform.subprocess, "run", _never_start_ray)

    result = CliRunner().invoke(app, ["up", "--node-ip-address", NOT_THIS_MACHINE])

    assert result.exit_code == 1
    assert f"MLAAS_NODE_IP_ADDRESS={NOT_THIS_MACHINE}" in result.output
    assert not (tmp_path / "home" / "state.json").exists(), "no head was started"


def _never_start_ray(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"the test would have started Ray: {args}")


def test_a_node_address_must_be_one_address_not_every_interface(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, node_ip_address="0.0.0.0")

    with pytest.raises(PlatformError, match="MLAAS_NODE_IP_ADDRESS='0.0.0.0'"):
        platform._check_head_ports(settings)


def test_a_cluster_on_other_machines_gets_no_path_of_this_one(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")

    local = platform.serve_config(settings)["applications"][0]["args"]["settings"]
    remote = platform.serve_config(settings, machine_paths=False)["applications"][0]["args"][
        "settings"]

    assert {"home", "tiers_file", "database_url"} <= set(local)
    assert not {"home", "tiers_file", "database_url"} & set(remote)
    assert remote["port"] == settings.port


@pytest.mark.parametrize(("address", "here"), [
    ("127.0.0.1:6379", True), ("auto", True), (f"{NOT_THIS_MACHINE}:6379", False),
    ("ray://10.1.2.3:10001", False),
])
def test_which_ray_addresses_are_on_this_machine(address: str, here: bool) -> None:
    assert platform.is_on_this_machine(address) is here
