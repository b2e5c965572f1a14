"""No drive-by use from a web page.

A page open in a developer's browser can send a form (or a `fetch` that needs no preflight) to
`http://127.0.0.1:7070`, where no token is needed, and a DNS-rebinding page (its own name,
re-pointed at 127.0.0.1) can even read the answers. Browsers always say who asks: the `Host`
header carries the name in the page's URL, and a cross-origin `POST`/`PUT`/`PATCH`/`DELETE`
carries an `Origin`. So, whether tokens are required or not:

- a request for a `Host` this node does not serve is refused: its listening address, loopback
  names and addresses, any IP address when it listens on every address (a rebinding page has a
  name, never an address), the machine's name, and `SPINLET_ALLOWED_HOSTS` (`*`: any);
- a state-changing request whose `Origin` is not the node's own (scheme, host and port of the
  `Host` it was sent to) is refused. Clients that are not browsers (curl, the SDK, the Qinling
  client) send no `Origin` and are not concerned. Webhook URLs are meant to be called from
  anywhere (a page included) and act only for whoever knows their secret id: the operation
  table marks them (`CROSS_ORIGIN_PATHS`), and only their `Host` is checked.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from yarl import URL

from spinlet.api.keys import route_path
from spinlet.api.openapi import CROSS_ORIGIN_PATHS
from spinlet.errors import Forbidden
from spinlet.settings import Settings, is_loopback

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


class HostNotAllowed(Forbidden):
    """This node does not serve the host the request was sent to."""

    code = "host_not_allowed"


class ForeignOrigin(Forbidden):
    """A web page of another origin may not change anything on this node."""

    code = "foreign_origin"


@dataclass(frozen=True)
class Address:
    """The host (lower case, no brackets) and the port, if given, of a `Host` header."""

    host: str
    port: int | None

    @classmethod
    def parse(cls, value: str) -> Address | None:
        try:
            url = URL(f"http://{value}")
        except ValueError:
            return None
        if not url.raw_host or url.path not in ("", "/") or url.user or url.query_string:
            return None
        return cls(_normal(url.raw_host), url.explicit_port)


def _normal(host: str) -> str:
    return host.lower().rstrip(".").strip("[]")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class ServedHosts:
    """The hosts a node answers to, from its settings."""

    listen: str
    names: frozenset[str]
    any_host: bool

    @classmethod
    def of(cls, settings: Settings) -> ServedHosts:
        listen = _normal(settings.host)
        # `lb.example:8080` is taken as `lb.example`: the port is not checked.
        allowed = (Address.parse(host) for host in settings.allowed_hosts if host != "*")
        names = {listen, *(address.host for address in allowed if address is not None)}
        if not is_loopback(listen):  # reachable from other machines, by the machine's name
            names.add(socket.gethostname().lower())
        return cls(listen, frozenset(names), "*" in settings.allowed_hosts)

    def __contains__(self, host: str) -> bool:
        if self.any_host or host in self.names or is_loopback(host):
            return True
        address, listening = _ip(host), _ip(self.listen)
        if address is None or listening is None:
            return False
        return listening.is_unspecified or address == listening


#: The hosts this app's node serves (set by `create_app`).
SERVED_HOSTS = web.AppKey("served_hosts", ServedHosts)


def _same_origin(origin: str, served: Address) -> bool:
    """Whether `origin` is the one the request was sent to: same host, same port (a `Host`
    without a port is reached on the default port of the page's scheme, as behind a proxy)."""
    try:
        url = URL(origin)
    except ValueError:
        return False
    if url.scheme not in DEFAULT_PORTS or not url.raw_host or url.path not in ("", "/"):
        return False
    if _normal(url.raw_host) != served.host:
        return False
    if served.port is None:
        return url.explicit_port in (None, DEFAULT_PORTS[url.scheme])
    return url.port == served.port


@web.middleware
async def refuse_browsers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for a foreign `Host` (DNS rebinding) or a state-changing foreign `Origin`."""
    host = request.headers.get(hdrs.HOST)
    served = Address.parse(host) if host is not None else None
    if host is not None and (served is None or served.host not in request.app[SERVED_HOSTS]):
        raise HostNotAllowed(
            f"this node does not serve the host {host!r}: if that is a name of the node or of "
            "its load balancer, add it to SPINLET_ALLOWED_HOSTS (comma-separated, * for any)"
        )
    origin = request.headers.get(hdrs.ORIGIN)
    if (
        origin is not None
        and request.method in STATE_CHANGING
        and route_path(request) not in CROSS_ORIGIN_PATHS
        and (served is None or not _same_origin(origin, served))
    ):
        raise ForeignOrigin(
            f"a {request.method} from a web page at {origin} is refused: this node takes "
            "changes from its own origin and from clients that send no Origin (curl, SDKs)"
        )
    return await handler(request)
