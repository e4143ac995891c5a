"""Finding print hosts on the local network with mDNS / DNS-SD (zeroconf).

A printer's computer usually gets its address from DHCP and has no DNS name anyone
set up, so the host announces itself instead: `_printhost._tcp` lets printhost
clients (and `printhost discover`) find the API together with the host's UUID and
version, and `_http._tcp` makes the same instance show up in generic service
browsers and "open in browser" menus. Both carry the API path so a client never has
to guess it.

mDNS is a convenience, never a requirement: a host on a network that blocks
multicast, or with no network at all, must still print. So `Advertiser.start`
logs a warning and returns instead of raising when zeroconf cannot run.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import Any

import ifaddr  # zeroconf's own interface lister, always installed alongside it
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

__all__ = [
    "Advertiser",
    "HTTP_SERVICE_TYPE",
    "SERVICE_TYPE",
    "discover",
    "host_addresses",
    "instance_label",
]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_printhost._tcp.local."
HTTP_SERVICE_TYPE = "_http._tcp.local."
# What `path` of the _http._tcp service points at: the HTML home page.
HOME_PATH = "/"

# RFC 6763 section 4.1.1: an instance name is one DNS label, at most 63 bytes.
_MAX_LABEL_BYTES = 63

InterfacesType = Sequence[str | int] | InterfaceChoice


def host_addresses() -> list[str]:
    """The host's non-loopback IPv4 and IPv6 addresses, IPv4 first; or ["127.0.0.1"].

    These go into the A/AAAA records of the announcement. The loopback fallback keeps
    a machine with no configured network (a sandbox, a board before Wi-Fi is set up)
    advertising something coherent on the only interface it has, rather than
    publishing a service with no address, which resolvers treat as unresolvable.
    """
    v4: list[str] = []
    v6: list[str] = []
    try:
        adapters = ifaddr.get_adapters()
    except OSError as exc:
        log.debug("cannot list network interfaces: %s", exc)
        adapters = []
    for adapter in adapters:
        for ip in adapter.ips:
            # ifaddr gives IPv6 as (address, flowinfo, scope_id); an AAAA record
            # carries only the address, the scope is implied by the receiving link.
            text = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            try:
                addr = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                continue
            if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
                continue
            bucket = v4 if addr.version == 4 else v6
            if str(addr) not in bucket:
                bucket.append(str(addr))
    return (v4 + v6) or ["127.0.0.1"]


def instance_label(name: str) -> str:
    """`name` made usable as a DNS-SD instance label.

    The label may hold spaces and any UTF-8, but zeroconf writes a '.' as a label
    separator (it does not escape it), control characters confuse browsers, and more
    than 63 bytes is invalid; those are replaced or cut here rather than failing the
    announcement over a cosmetic name.
    """
    cleaned = re.sub(r"[\x00-\x1f\x7f]", "", name).replace(".", "-").strip()
    encoded = cleaned.encode()[:_MAX_LABEL_BYTES]
    cleaned = encoded.decode(errors="ignore").strip()
    return cleaned or "printhost"


def _host_label(uuid: str) -> str:
    # A host name of our own instead of the machine's: avahi on the same box may
    # already publish <hostname>.local with its own address set, and two responders
    # answering one name with different records is exactly what mDNS calls a conflict.
    tail = re.sub(r"[^a-z0-9]", "", uuid.lower())[:12]
    return f"printhost-{tail}.local." if tail else "printhost.local."


class Advertiser:
    """Announces one print host as `_printhost._tcp` and `_http._tcp` while running.

    `interfaces` and `ip_version` are passed to zeroconf: the default sends on every
    IPv4 interface (zeroconf's own default); a list such as ["127.0.0.1"] restricts it.
    `addresses` are the addresses published for the host and default to
    `host_addresses()`. Each service has its instance name made unique by zeroconf
    if another host already uses it ("name-2"), so `service_names` tells what was
    actually registered; clients should match instances by the `uuid` TXT key.
    """

    def __init__(self, instance_name: str, port: int, uuid: str, version: str,
                 api_path: str = "/api/v1",
                 interfaces: InterfacesType = InterfaceChoice.All,
                 addresses: Sequence[str] | None = None,
                 *, host_name: str | None = None,
                 ip_version: IPVersion | None = None) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not a TCP port")
        if not api_path.startswith("/"):
            raise ValueError(f"api_path {api_path!r} must start with '/'")
        self.instance_name = instance_label(instance_name)
        self.port = port
        self.uuid = uuid
        self.version = version
        self.api_path = api_path
        if isinstance(interfaces, str):  # one address given bare, not as a list
            interfaces = [interfaces]
        self.interfaces = interfaces if isinstance(interfaces, InterfaceChoice) else list(interfaces)
        self.addresses = list(addresses) if addresses is not None else host_addresses()
        for a in self.addresses:
            ipaddress.ip_address(a)  # a typo here should fail at construction, loudly
        self.host_name = host_name or _host_label(uuid)
        self.ip_version = ip_version
        self._aiozc: AsyncZeroconf | None = None
        self._infos: list[AsyncServiceInfo] = []

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return bool(self._infos)

    @property
    def service_names(self) -> list[str]:
        """Fully qualified names as registered (after any conflict renaming)."""
        return [info.name for info in self._infos]

    def txt_records(self, service_type: str = SERVICE_TYPE) -> dict[str, str]:
        txt = {"uuid": self.uuid, "version": self.version, "api": self.api_path}
        if service_type == HTTP_SERVICE_TYPE:
            # RFC 6763 section 7.1 / the _http registry: "path" is where the page lives,
            # here the home page (printhost/api/routes/home.py), which links the API.
            txt["path"] = HOME_PATH
        return txt

    def _service_info(self, service_type: str) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            service_type,
            f"{self.instance_name}.{service_type}",
            port=self.port,
            properties=self.txt_records(service_type),
            server=self.host_name,
            parsed_addresses=self.addresses,
        )

    async def start(self) -> bool:
        """Register both services; True when they are announced, False when mDNS is off.

        Returns once zeroconf has probed the names and sent the announcements (about
        two seconds), so a caller that must not wait can run it as a task. Any
        failure (no usable interface, multicast refused, socket errors) is logged as
        a warning and leaves the advertiser stopped; the rest of printhost goes on.
        """
        if self._aiozc is not None:
            return self.running
        try:
            self._aiozc = AsyncZeroconf(interfaces=self.interfaces, ip_version=self.ip_version)
            infos = [self._service_info(SERVICE_TYPE), self._service_info(HTTP_SERVICE_TYPE)]
            # Probing takes ~1.5 s per name; both types are probed side by side.
            pending = await asyncio.gather(*(
                self._aiozc.async_register_service(info, allow_name_change=True)
                for info in infos))
            await asyncio.gather(*pending)
            self._infos = infos
        except Exception as exc:  # noqa: BLE001 - mDNS must never stop the host
            log.warning("mDNS advertisement unavailable, continuing without it: %s", exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            await self._close_quietly()
            return False
        log.info("advertising %s on port %d via mDNS (%s)", ", ".join(self.service_names),
                 self.port, ", ".join(self.addresses))
        return True

    async def stop(self) -> None:
        """Send goodbyes for both services so browsers drop them at once, then close.

        Safe to call when `start()` failed or was never called; errors (say, the
        network went away meanwhile) are logged, not raised, since this runs on the
        shutdown path.
        """
        if self._aiozc is None:
            return
        if self._infos:
            try:
                pending = await asyncio.gather(*(
                    self._aiozc.async_unregister_service(info) for info in self._infos))
                await asyncio.gather(*pending)
            except Exception as exc:  # noqa: BLE001 - shutdown must complete
                log.warning("mDNS goodbye failed: %s", exc)
        self._infos = []
        await self._close_quietly()

    async def _close_quietly(self) -> None:
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        try:
            await aiozc.async_close()
        except Exception as exc:  # noqa: BLE001
            log.debug("closing zeroconf failed: %s", exc)

    async def __aenter__(self) -> Advertiser:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()


def _decode_txt(properties: dict[bytes, bytes | None]) -> dict[str, str | None]:
    return {k.decode(errors="replace"): (None if v is None else v.decode(errors="replace"))
            for k, v in properties.items()}


async def _resolve(zc: Zeroconf, fullname: str, timeout_ms: int) -> dict[str, Any] | None:
    info = AsyncServiceInfo(SERVICE_TYPE, fullname)
    if not await info.async_request(zc, timeout_ms):
        return None
    return {
        "name": fullname[: -len(SERVICE_TYPE) - 1],
        "fullname": fullname,
        "host": info.server,
        "addresses": info.parsed_addresses(),
        "port": info.port,
        "txt": _decode_txt(info.properties),
    }


async def discover(timeout_s: float, *, interfaces: InterfacesType = InterfaceChoice.All,
                   ip_version: IPVersion | None = None) -> list[dict[str, Any]]:
    """Print hosts answering on the local network within `timeout_s` seconds.

    Each entry has `name` (instance), `fullname`, `host`, `addresses`, `port` and
    `txt` (decoded to str; a key without value maps to None), sorted by name.
    Instances that said goodbye during the browse are left out, and so are those
    that could not be resolved. Unlike `Advertiser.start`, this raises OSError when
    zeroconf cannot open its sockets: the caller asked for a network operation and
    should hear why it got nothing.
    """
    if timeout_s < 0:
        raise ValueError("timeout_s must not be negative")
    seen: dict[str, None] = {}  # insertion-ordered set

    def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            seen.pop(name, None)
        else:
            seen[name] = None

    aiozc = AsyncZeroconf(interfaces=interfaces, ip_version=ip_version)
    try:
        browser = AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[on_change])
        try:
            await asyncio.sleep(timeout_s)
        finally:
            await browser.async_cancel()
        # Responders send SRV/TXT/A with the PTR answer, so this is normally served
        # from the cache; the timeout only matters for a host that answered partly.
        results = await asyncio.gather(*(_resolve(aiozc.zeroconf, name, 1500) for name in seen))
    finally:
        await aiozc.async_close()
    return sorted((r for r in results if r is not None), key=lambda r: r["name"])
