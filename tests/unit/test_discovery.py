"""mDNS advertisement and discovery, over real multicast on the loopback interface.

Every zeroconf instance here is bound to interfaces=["127.0.0.1"]: Linux delivers
multicast sent on `lo` back to other sockets joined there (IP_MULTICAST_LOOP), which
works in this sandbox even though `lo` lacks the MULTICAST flag, and it keeps the
test's mDNS traffic on this machine instead of the LAN. The advertiser and the
observer are separate zeroconf instances with separate sockets and caches, so what
the observer sees went through the network stack; nothing is mocked except, in the
address-helper tests, the list of interfaces.
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib

import ifaddr
import pytest
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from printhost import discovery
from printhost.discovery import HTTP_SERVICE_TYPE, SERVICE_TYPE, Advertiser, discover

LOOPBACK = ["127.0.0.1"]
pytestmark = pytest.mark.timeout(60)


def _observer() -> AsyncZeroconf:
    return AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)


def _advertiser(name: str | None = None, port: int = 7130, uid: str | None = None) -> Advertiser:
    return Advertiser(name or f"printhost-test-{uuidlib.uuid4().hex[:8]}", port,
                      uid or str(uuidlib.uuid4()), "0.1.0-test", api_path="/api/v1",
                      interfaces=LOOPBACK, addresses=LOOPBACK, ip_version=IPVersion.V4Only)


async def _resolve(zc: AsyncZeroconf, service_type: str, fullname: str,
                   timeout_ms: int = 3000) -> AsyncServiceInfo | None:
    info = AsyncServiceInfo(service_type, fullname)
    return info if await info.async_request(zc.zeroconf, timeout_ms) else None


def test_advertise_resolve_and_goodbye():
    async def scenario():
        adv = _advertiser(port=7131)
        assert await adv.start() is True
        assert adv.running
        printhost_name, http_name = adv.service_names
        assert printhost_name == f"{adv.instance_name}.{SERVICE_TYPE}"
        assert http_name == f"{adv.instance_name}.{HTTP_SERVICE_TYPE}"

        observer = _observer()
        added, removed = asyncio.Event(), asyncio.Event()

        def on_change(zeroconf, service_type, name, state_change):
            if name == printhost_name:
                if state_change is ServiceStateChange.Added:
                    added.set()
                elif state_change is ServiceStateChange.Removed:
                    removed.set()

        browser = AsyncServiceBrowser(observer.zeroconf, SERVICE_TYPE, handlers=[on_change])
        try:
            info = await _resolve(observer, SERVICE_TYPE, printhost_name)
            assert info is not None, "advertised _printhost service did not resolve"
            assert info.port == 7131
            assert info.parsed_addresses() == ["127.0.0.1"]
            assert info.server == adv.host_name
            assert info.properties == {b"uuid": adv.uuid.encode(), b"version": b"0.1.0-test",
                                       b"api": b"/api/v1"}

            http = await _resolve(observer, HTTP_SERVICE_TYPE, http_name)
            assert http is not None, "advertised _http service did not resolve"
            assert http.port == 7131
            assert http.properties[b"path"] == b"/api/v1"
            assert http.properties[b"uuid"] == adv.uuid.encode()

            # A browser only reports the removal of instances it has seen appear.
            await asyncio.wait_for(added.wait(), timeout=10)
            await adv.stop()
            assert not adv.running
            # The goodbye (TTL 0) reaches the browser, which reports the removal.
            await asyncio.wait_for(removed.wait(), timeout=10)
        finally:
            await browser.async_cancel()
            await observer.async_close()
            await adv.stop()

        # A fresh observer with an empty cache finds nobody answering any more.
        fresh = _observer()
        try:
            assert await _resolve(fresh, SERVICE_TYPE, printhost_name, timeout_ms=1500) is None
        finally:
            await fresh.async_close()

    asyncio.run(scenario())


def test_discover_finds_running_advertiser():
    async def scenario():
        adv = _advertiser(port=7132)
        assert await adv.start()
        registered = adv.service_names
        try:
            found = await discover(2.0, interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
        finally:
            await adv.stop()
        mine = [f for f in found if f["txt"].get("uuid") == adv.uuid]
        assert len(mine) == 1, found
        entry = mine[0]
        assert entry["name"] == adv.instance_name
        assert entry["fullname"] == registered[0]
        assert entry["port"] == 7132
        assert entry["addresses"] == ["127.0.0.1"]
        assert entry["host"] == adv.host_name
        assert entry["txt"] == {"uuid": adv.uuid, "version": "0.1.0-test", "api": "/api/v1"}

    asyncio.run(scenario())


def test_name_conflict_is_resolved_by_renaming():
    async def scenario():
        shared = f"printhost-clash-{uuidlib.uuid4().hex[:8]}"
        first = _advertiser(shared, port=7133)
        second = _advertiser(shared, port=7134)
        assert await first.start()
        try:
            assert await second.start()
            try:
                assert first.service_names[0] == f"{shared}.{SERVICE_TYPE}"
                renamed = second.service_names[0]
                assert renamed != first.service_names[0]
                assert renamed.startswith(shared)
                observer = _observer()
                try:
                    a = await _resolve(observer, SERVICE_TYPE, first.service_names[0])
                    b = await _resolve(observer, SERVICE_TYPE, renamed)
                finally:
                    await observer.async_close()
                assert a is not None and a.port == 7133
                assert b is not None and b.port == 7134
                assert b.properties[b"uuid"] == second.uuid.encode()
            finally:
                await second.stop()
        finally:
            await first.stop()

    asyncio.run(scenario())


def test_start_without_usable_network_warns_and_carries_on(caplog):
    # 203.0.113.7 (TEST-NET-3) is on none of this machine's interfaces, so zeroconf
    # cannot join the multicast group there: the same failure as a host whose only
    # interface is down. Nothing is sent anywhere.
    configured = {ip.ip if isinstance(ip.ip, str) else ip.ip[0]
                  for a in ifaddr.get_adapters() for ip in a.ips}
    if "203.0.113.7" in configured:
        pytest.skip("203.0.113.7 is configured on this machine")

    async def scenario():
        adv = Advertiser("printhost-offline", 7135, str(uuidlib.uuid4()), "0.1.0",
                         interfaces=["203.0.113.7"], addresses=LOOPBACK)
        with caplog.at_level(logging.WARNING, logger="printhost.discovery"):
            assert await adv.start() is False
        assert not adv.running
        assert adv.service_names == []
        assert any("mDNS advertisement unavailable" in r.getMessage() for r in caplog.records)
        await adv.stop()  # must be harmless after a failed start
        await adv.stop()

    asyncio.run(scenario())


def test_discover_reports_socket_failure():
    async def scenario():
        with pytest.raises(OSError):
            await discover(0.1, interfaces=["203.0.113.7"])

    asyncio.run(scenario())


def _adapter(name, *ips):
    return ifaddr.Adapter(name, name, [ifaddr.IP(ip, prefix, name) for ip, prefix in ips])


def test_host_addresses_skips_loopback_and_lists_ipv4_first(monkeypatch):
    adapters = [
        _adapter("lo", ("127.0.0.1", 8), (("::1", 0, 0), 128)),
        _adapter("wlan0", (("fe80::1", 0, 3), 64), ("192.168.7.20", 24)),
        _adapter("eth0", ("10.1.2.3", 8), (("2001:db8::5", 0, 0), 64), ("10.1.2.3", 8)),
    ]
    monkeypatch.setattr(discovery.ifaddr, "get_adapters", lambda: adapters)
    assert discovery.host_addresses() == ["192.168.7.20", "10.1.2.3", "fe80::1", "2001:db8::5"]


def test_host_addresses_falls_back_to_loopback(monkeypatch):
    only_lo = [_adapter("lo", ("127.0.0.1", 8), (("::1", 0, 0), 128))]
    monkeypatch.setattr(discovery.ifaddr, "get_adapters", lambda: only_lo)
    assert discovery.host_addresses() == ["127.0.0.1"]
    monkeypatch.setattr(discovery.ifaddr, "get_adapters", lambda: [])
    assert discovery.host_addresses() == ["127.0.0.1"]


def test_advertiser_defaults_to_host_addresses(monkeypatch):
    monkeypatch.setattr(discovery, "host_addresses", lambda: ["192.168.7.20"])
    adv = Advertiser("x", 7130, "abc", "1")
    assert adv.addresses == ["192.168.7.20"]
    assert adv.txt_records(SERVICE_TYPE) == {"uuid": "abc", "version": "1", "api": "/api/v1"}
    assert adv.txt_records(HTTP_SERVICE_TYPE)["path"] == "/api/v1"


def test_instance_label_is_a_valid_single_label():
    assert discovery.instance_label("Ender 3 (kitchen)") == "Ender 3 (kitchen)"
    assert discovery.instance_label("printer.local") == "printer-local"
    assert discovery.instance_label("  \t\n ") == "printhost"
    long = discovery.instance_label("Drucker-" + "ü" * 60)
    assert len(long.encode()) <= 63
    long.encode().decode()  # truncation must not split a UTF-8 sequence


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Advertiser("x", 0, "abc", "1", addresses=LOOPBACK)
    with pytest.raises(ValueError):
        Advertiser("x", 7130, "abc", "1", api_path="api", addresses=LOOPBACK)
    with pytest.raises(ValueError):
        Advertiser("x", 7130, "abc", "1", addresses=["not-an-address"])
