"""The network of functions that have one: the outside world, and nothing of this node.

One Docker bridge network, `spinlet-functions`, with inter-container traffic off, so a function
reaches no other container on it (runtime servers listen on Unix sockets anyway, never on it);
and a rule in the host's `INPUT` chain that drops connections opened from its bridge, so a function
reaches no service of the host either (the control plane, PostgreSQL, the Docker API), whatever
address they listen on; nor the link-local range (a cloud's instance metadata). Traffic to the
outside world is routed (and NATed) as Docker does it.

Made on first use, by whichever node gets there first; the rule needs `iptables` and root on the
machine the Docker engine runs on. Without them a function with network is refused rather than
run with the host open to it.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import docker.errors

from spinlet.errors import RuntimeBackendError

FUNCTION_NETWORK = "spinlet-functions"
FUNCTION_BRIDGE = "spinlet-fn0"  # the host interface of the network's bridge
#: The rules, each as `-C`/`-I` take it: new connections from the bridge to the host are dropped
#: (the host may still open connections to a function's container), and so is everything to the
#: link-local range, where clouds serve instance metadata and credentials.
FIREWALL = [
    ["INPUT", "-i", FUNCTION_BRIDGE, "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP"],
    ["DOCKER-USER", "-i", FUNCTION_BRIDGE, "-d", "169.254.0.0/16", "-j", "DROP"],
]


def ensure_function_network(client: Any) -> str:
    """The functions' network, made (with the host closed to it) if it is not there yet."""
    try:
        client.networks.get(FUNCTION_NETWORK)
    except docker.errors.NotFound:
        try:
            client.networks.create(
                FUNCTION_NETWORK,
                driver="bridge",
                options={
                    "com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.bridge.name": FUNCTION_BRIDGE,
                },
                labels={"spinlet.network": "functions"},
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: another node made it meanwhile
                raise
    close_host_to_bridge()
    return FUNCTION_NETWORK


def close_host_to_bridge() -> None:
    """Put the `FIREWALL` rules in place (each once: it is checked first)."""
    iptables = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if iptables is None:
        raise RuntimeBackendError(
            "functions with network need iptables on this node (to keep them from reaching "
            "the host); install it, or turn the function's network off"
        )
    for rule in FIREWALL:
        if _iptables(iptables, "-C", *rule).returncode == 0:
            continue
        inserted = _iptables(iptables, "-I", *rule)
        if inserted.returncode != 0:
            raise RuntimeBackendError(
                "functions with network need the host closed to them, and adding a firewall "
                f"rule failed (run the node as root): {inserted.stderr.strip()}"
            )


def _iptables(iptables: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [iptables, "-w", *args], capture_output=True, text=True, timeout=30, check=False
    )
