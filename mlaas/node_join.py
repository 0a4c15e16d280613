"""Adding a machine to the platform's Ray cluster: ``mlaas join --address HEAD:PORT``.

A Ray node's processes (replicas, actors, training drivers and workers) start with the
environment of its raylet, so the node must be started with the platform's ``MLAAS_*``
settings (the shared database, JWT secret and storage) and the head's auth token; this
module builds that ``ray start`` command and environment, and refuses settings that would
make the node keep state of its own.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from mlaas.cluster_mode import cluster_mode_problems, is_loopback
from mlaas.errors import ConfigurationError
from mlaas.platform import (
    PlatformError,
    auth_token_available,
    collective_env,
    haproxy_env,
    ray_binary,
    ray_reachable,
    serve_env,
)
from mlaas.settings import Settings

# What a node must share with the others (the Serve host is the head's business).
SHARED_STATE_CHECKS = ("database", "jwt_secret", "storage")


def join_command(settings: Settings, address: str, *, block: bool = False) -> list[str]:
    """``ray start`` joining the head at ``address``, as a node of these settings (in the
    foreground with ``block``, as a container's or a service manager's main process)."""
    command = [ray_binary(), "start", f"--address={address}", "--disable-usage-stats"]
    if block:
        command.append("--block")
    if not is_loopback(settings.node_ip_address):
        command.append(f"--node-ip-address={settings.node_ip_address}")
    # else Ray finds the address this machine reaches the head from.
    if settings.ray_num_cpus:
        command.append(f"--num-cpus={settings.ray_num_cpus}")
    if settings.node_resources:
        command.append(f"--resources={json.dumps(settings.node_resources)}")
    return command


def join_env(address: str, token_file: Path | None = None) -> dict[str, str]:
    """This shell's environment (its ``MLAAS_*`` settings included) with token auth on and
    ``RAY_ADDRESS`` pinned to the head, as the head's raylet has it.

    Raises:
        PlatformError: no auth token is available here.
    """
    env = dict(os.environ)
    if token_file is not None:
        env["RAY_AUTH_TOKEN_PATH"] = str(token_file.expanduser().resolve())
    if not auth_token_available(env):
        raise PlatformError(
            "No Ray auth token on this machine: the head accepts token-authenticated nodes "
            "only. Copy the head's ~/.ray/auth_token here (same path, mode 0600), or pass "
            "--token-file PATH, or set RAY_AUTH_TOKEN to its content."
        )
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_ADDRESS"] = address
    return env


def check_shared_state(settings: Settings) -> None:
    """Refuse settings with which this node would keep state of its own.

    Raises:
        ConfigurationError: one line per problem, each naming the setting to set.
    """
    problems = cluster_mode_problems(settings, alive_nodes=2, checks=SHARED_STATE_CHECKS)
    if problems:
        raise ConfigurationError(
            "A node that joins the platform must share its state; set what the head has:\n"
            + "\n".join(f"- {problem}" for problem in problems),
            details={"problems": problems},
        )


def shown_command(command: list[str], env: dict[str, str]) -> str:
    """The command as a shell line, with the variables it adds but never a secret's value."""
    names = sorted(k for k in env if k.startswith("MLAAS_"))
    pinned = f"RAY_AUTH_MODE=token RAY_ADDRESS={shlex.quote(env['RAY_ADDRESS'])}"
    line = f"{pinned} {shlex.join(command)}"
    return line + (f"\n# with this shell's {', '.join(names)}" if names else "")


def join_cluster(
    settings: Settings, address: str, token_file: Path | None = None, *, block: bool = False
) -> None:
    """Start this machine's Ray node in the cluster of the head at ``address``.

    With ``block``, this process becomes ``ray start --block`` (after the checks): the node
    lives as long as it, and stopping it (or its process group) takes the node out.

    Raises:
        ConfigurationError: settings that do not share the platform's state.
        PlatformError: no token, the head is unreachable, or ``ray start`` failed.
    """
    check_shared_state(settings)
    env = join_env(address, token_file)
    env.update(collective_env(settings, env))
    env.update(serve_env(env))
    if settings.ingress == "haproxy":
        env.update(haproxy_env(settings))
    if not ray_reachable(address):
        raise PlatformError(
            f"Cannot reach the head at {address}: nothing answers there. Check the address "
            "`mlaas up` printed, and that this machine reaches its MLAAS_RAY_PORT."
        )
    if block:
        command = join_command(settings, address, block=True)
        os.execvpe(command[0], command, env)
    try:
        result = subprocess.run(
            join_command(settings, address), env=env, capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        raise PlatformError(
            "`ray start` did not finish within 180 s; `ray stop` on this machine, then retry"
        ) from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise PlatformError(f"`ray start --address={address}` failed:\n{tail}")
