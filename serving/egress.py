"""Where upstream calls may go, and which environment variables may hold their keys.

A catalog model names a ``base_url`` and an ``api_key_env``; whoever may register a model
(an admin key, anyone in development mode) would otherwise choose where the gateway
connects and which of the server's variables it sends as a bearer token.
:class:`EgressPolicy` says no to both unless the gateway settings widen it:

- an upstream must be at a public address; loopback is admitted in development mode, and
  ``upstream_allow`` admits hosts and networks (a cloud metadata address only when listed
  exactly, never through a wider network);
- ``api_key_env`` must match one of the ``api_key_envs`` patterns, never starts with
  ``ROUTEBANDIT_`` and never names a variable holding the database URL.

The policy is checked when a model is registered (names that resolve are checked on all
their addresses) and again on every connection, on the address actually connected to
(:mod:`serving.aiohttp_transport`, :mod:`serving.upstream`). Messages name the rule and
the setting that widens it, never a variable's value.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bandit.catalog import ModelSpec
from bandit.errors import CatalogError, RouteBanditError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses it resolves to (OSError when it does not resolve).
Resolver = Callable[[str, int], Sequence[str]]

DEFAULT_KEY_ENVS = ("*_API_KEY", "*_TOKEN")
RESERVED_PREFIX = "ROUTEBANDIT_"
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
ALLOW_SETTING = "setting 'upstream_allow' (ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW)"
KEYS_SETTING = "setting 'api_key_envs' (ROUTEBANDIT_GATEWAY__API_KEY_ENVS)"

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class EgressError(RouteBanditError):
    """An upstream address or key variable the policy refuses; ``field`` is the
    catalog field at fault (``base_url`` or ``api_key_env``)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def resolve_system(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (blocking ``getaddrinfo``; OSError if none)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address, else itself.

    >>> str(unwrap(ipaddress.ip_address("::ffff:127.0.0.1")))
    '127.0.0.1'
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def classify(address: IPAddress) -> str | None:
    """What makes ``address`` unfit for an upstream by default, or None if it is public.

    >>> classify(ipaddress.ip_address("169.254.169.254"))
    'a cloud metadata address'
    >>> classify(ipaddress.ip_address("8.8.8.8")) is None
    True
    """
    ip = unwrap(address)
    if ip in METADATA_ADDRESSES or address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a reserved (non-global) address"
    return None


@dataclass(frozen=True)
class Allow:
    """The networks and host names ``upstream_allow`` admits."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    def admits(self, address: IPAddress, host: str) -> bool:
        if _host_key(host) in self.hosts:
            return True
        ip = unwrap(address)
        if ip in METADATA_ADDRESSES or address in METADATA_ADDRESSES:
            # Only an exact entry: a network listed for other reasons never opens these.
            return any(net.num_addresses == 1 and net.network_address in (ip, address)
                       for net in self.networks)
        return any(ip in net or address in net for net in self.networks)


def parse_allow(entries: Iterable[str]) -> Allow:
    """``upstream_allow``'s entries: CIDRs or addresses, else host names.

    >>> parse_allow(["10.0.0.0/8", "vllm.internal"]).hosts
    frozenset({'vllm.internal'})
    """
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for entry in entries:
        text = entry.strip()
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
            continue
        except ValueError:
            pass
        host = _host_key(text)
        if not host or not all(_LABEL_RE.match(label) for label in host.split(".")):
            raise ValueError(f"{entry!r} is neither a host name nor an address or CIDR")
        hosts.add(host)
    return Allow(tuple(networks), frozenset(hosts))


def _host_key(host: str) -> str:
    return host.strip().lower().rstrip(".")


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one (brackets and IPv6 zone allowed)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class EgressPolicy:
    """What :mod:`serving.egress` admits (see the module docstring).

    ``loopback`` is development mode's allowance; ``resolver`` turns a host name into
    addresses (injectable: tests make names resolve where they like).
    """

    allow: Allow = field(default_factory=Allow)
    loopback: bool = False
    key_envs: tuple[str, ...] = DEFAULT_KEY_ENVS
    database_url: str | None = field(default=None, repr=False)
    resolver: Resolver = field(default=resolve_system, repr=False, compare=False)
    # Registration waits this long for a name to resolve (a slow or absent resolver must
    # not stall start-up or POST /v1/models); past it the name counts as not resolving
    # now, and the connect-time check guards it as it guards any such name.
    resolve_timeout_s: float = 2.0

    # -- addresses ---------------------------------------------------------------------
    def refusal(self, address: IPAddress, host: str) -> str | None:
        """Why connecting to ``address`` (for ``host``) is refused, or None."""
        kind = classify(address)
        if kind is None or self.allow.admits(address, host):
            return None
        if self.loopback and unwrap(address).is_loopback:
            return None
        named = host if literal_address(host) == address else f"{host} ({address})"
        dev = "" if self.loopback or kind != "a loopback address" else (
            "; development mode (no API keys) admits loopback")
        return (f"{named} is {kind}: upstreams must be at public addresses unless "
                f"{ALLOW_SETTING} lists the host or a network holding it{dev}")

    def check_address(self, address: IPAddress, host: str) -> None:
        problem = self.refusal(address, host)
        if problem is not None:
            raise EgressError(problem, field="base_url")

    def admitted(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``, all of them checked.

        Raises :class:`EgressError` if any is refused, OSError if ``host`` does not
        resolve. Called on every new connection (after DNS, before connecting).
        """
        literal = literal_address(host)
        if literal is not None:
            self.check_address(literal, host)
            return [str(literal)]
        addresses = list(self.resolver(host, port))
        if not addresses:
            raise OSError(f"{host}: resolves to no address")
        for text in addresses:
            self.check_address(ipaddress.ip_address(text), host)
        return addresses

    def check_url(self, url: str, *, resolve: bool = False) -> None:
        """Scheme http(s) and a host; a literal address is checked, and with ``resolve``
        so is every address a name resolves to (one that does not resolve now passes:
        the connect-time check guards it)."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise EgressError(f"not a valid URL ({exc})", field="base_url") from exc
        if parts.scheme not in ("http", "https"):
            raise EgressError(f"scheme must be http or https, got {parts.scheme!r}",
                              field="base_url")
        if not host:
            raise EgressError("the URL names no host", field="base_url")
        literal = literal_address(host)
        if literal is not None:
            self.check_address(literal, host)
        elif resolve:
            port = port or (443 if parts.scheme == "https" else 80)
            found = _RESOLVING.submit(self.admitted, host, port)
            try:
                found.result(timeout=self.resolve_timeout_s)
            except (OSError, concurrent.futures.TimeoutError):
                pass  # does not resolve now: the connect-time check guards it

    # -- key variables -------------------------------------------------------------------
    def check_key_name(self, name: str) -> None:
        """The name rule alone (no environment needed)."""
        problem = _key_name_problem(name, self.key_envs)
        if problem is not None:
            raise EgressError(problem, field="api_key_env")

    def key(self, name: str, env: Mapping[str, str]) -> str | None:
        """The value of the key variable ``name`` (None if unset), after the rules."""
        self.check_key_name(name)
        value = env.get(name)
        if value and self.database_url and value == self.database_url:
            raise EgressError(
                f"{name!r} holds the database URL, which is never sent upstream, whatever "
                f"{KEYS_SETTING} lists", field="api_key_env")
        return value

    # -- catalog models --------------------------------------------------------------------
    def check_model(self, spec: ModelSpec, where: str, *,
                    env: Mapping[str, str]) -> None:
        """Registration: raise :class:`~bandit.errors.CatalogError` naming ``where``'s
        field, the rule and the setting."""
        try:
            if spec.api_key_env:
                self.key(spec.api_key_env, env)
            if spec.base_url:
                self.check_url(spec.base_url, resolve=True)
        except EgressError as exc:
            raise CatalogError(f"{where}.{exc.field}: {exc}") from exc


# Registration's name look-ups, bounded in time (a look-up past its timeout finishes here).
_RESOLVING = concurrent.futures.ThreadPoolExecutor(max_workers=4,
                                                   thread_name_prefix="routebandit-resolve")


@functools.lru_cache(maxsize=1024)  # the gateway asks on every call
def _key_name_problem(name: str, patterns: tuple[str, ...]) -> str | None:
    if name.upper().startswith(RESERVED_PREFIX):
        return (f"{name!r} starts with {RESERVED_PREFIX}: the service's own settings are "
                f"never sent upstream, whatever {KEYS_SETTING} lists")
    if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
        return (f"{name!r} matches none of {', '.join(patterns) or '(no patterns)'}: "
                f"{KEYS_SETTING} lists the names api_key_env may use")
    return None


DEVELOPMENT = EgressPolicy(loopback=True)
"""What development mode admits: public and loopback addresses, the default key names."""
