"""mDNS advertisement and discovery over real multicast: on loopback, and between two
network namespaces for the name-conflict test.

Most zeroconf instances here are bound to interfaces=["127.0.0.1"]: Linux delivers
multicast sent on `lo` back to other sockets joined there (IP_MULTICAST_LOOP), which
works in this sandbox even though `lo` lacks the MULTICAST flag, and it keeps the
test's mDNS traffic on this machine instead of the LAN. The advertiser and the
observer are separate zeroconf instances with separate sockets and caches, so what
the observer sees went through the network stack; nothing is mocked except, in the
address-helper tests, the list of interfaces.

Renaming on a name conflict cannot be tested that way. zeroconf probes a name with
"QU" questions (RFC 6762 section 8.1), so the host already using it defends by
*unicast* to the prober's address and port 5353. Two responders in one network
namespace both bind 127.0.0.1:5353 with SO_REUSEPORT, and the kernel hands a unicast
datagram to just one of those sockets (chosen by a hash of the addresses, so always
the same one): the defence does not reach the prober, which then keeps the taken
name. Two printers on a LAN have an address each and never share a socket, so
`test_name_conflict_is_resolved_by_renaming` builds that LAN: two network namespaces
it creates, joined by a veth pair with addresses in 10.213.7.0/24, each running one
advertiser as a separate process, and an observer process that resolves both
instances across the link. The pair is created inside the namespaces and connects
only them, so no packet reaches the machine's real interfaces. Setting this up needs
iproute2 and root (CAP_SYS_ADMIN for the namespaces, CAP_NET_ADMIN for the link);
without them the test skips and says which step failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

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
            assert http.properties[b"path"] == b"/"   # the home page, GET /
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


REPO = Path(__file__).resolve().parents[2]

# One printer: advertises on its own address until a line (or EOF) arrives on stdin,
# then says goodbye. Prints the names it registered, as JSON, once they are announced.
_ADVERTISER_PROGRAM = """
import asyncio, json, sys
from zeroconf import IPVersion
from printhost.discovery import Advertiser

async def main(name, port, uid, address):
    adv = Advertiser(name, int(port), uid, "0.1.0-test", interfaces=[address],
                     addresses=[address], ip_version=IPVersion.V4Only)
    started = await adv.start()
    print(json.dumps({"started": started, "names": adv.service_names}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await adv.stop()

asyncio.run(main(*sys.argv[1:]))
"""

# A client on the LAN: resolves each (type, name) and prints what it got as JSON.
# The questions are QM, so answers come by multicast: a QU answer is unicast to
# port 5353, which this observer shares with the advertiser on its own host (the
# kernel would give the datagram to one of the two sockets only, as described above).
_OBSERVER_PROGRAM = """
import asyncio, json, sys
from zeroconf import DNSQuestionType, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

async def resolve(aiozc, service_type, name):
    info = AsyncServiceInfo(service_type, name)
    if not await info.async_request(aiozc.zeroconf, 4000, question_type=DNSQuestionType.QM):
        return None
    return {"port": info.port, "addresses": info.parsed_addresses(), "server": info.server,
            "txt": {k.decode(): v.decode() for k, v in info.properties.items()}}

async def main(address, wanted):
    aiozc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    try:
        pairs = json.loads(wanted)
        found = await asyncio.gather(*(resolve(aiozc, t, n) for t, n in pairs))
    finally:
        await aiozc.async_close()
    print(json.dumps({n: f for (t, n), f in zip(pairs, found)}), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


@dataclass
class _Host:
    netns: str
    address: str


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: two hosts on a private /24.

    Unique names per run (pid and a random tag), so parallel runs do not clash;
    deleting a namespace also deletes its end of the pair, so teardown leaves
    nothing behind.
    """
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` command to create network namespaces; not found")
    tag = f"{os.getpid()}-{uuidlib.uuid4().hex[:6]}"
    hosts = [_Host(f"printhost-test-{tag}-{i}", f"10.213.7.{i}") for i in (1, 2)]
    created: list[str] = []
    try:
        for host in hosts:
            r = _ip("netns", "add", host.netns)
            if r.returncode != 0:
                pytest.skip("cannot create a network namespace (`ip netns add` needs root "
                            f"with CAP_SYS_ADMIN): {r.stderr.strip()}")
            created.append(host.netns)
        r = _ip("netns", "exec", hosts[0].netns, sys.executable, "-c", "")
        if r.returncode != 0:
            pytest.skip(f"cannot run a process in a network namespace (`ip netns exec`): "
                        f"{r.stderr.strip()}")
        # Both ends are created inside the namespaces, never on the host's side.
        r = _ip("link", "add", "lan0", "netns", hosts[0].netns, "type", "veth",
                "peer", "name", "lan0", "netns", hosts[1].netns)
        if r.returncode != 0:
            pytest.skip("cannot create a veth pair between the namespaces (needs "
                        f"CAP_NET_ADMIN and the veth driver): {r.stderr.strip()}")
        for host in hosts:
            for args in (("addr", "add", f"{host.address}/24", "dev", "lan0"),
                         ("link", "set", "lan0", "up"),
                         ("link", "set", "lo", "up")):
                r = _ip("-n", host.netns, *args)
                assert r.returncode == 0, f"ip -n {host.netns} {' '.join(args)}: {r.stderr}"
        yield hosts
    finally:
        for netns in created:
            _ip("netns", "del", netns)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _read_json_line(proc: subprocess.Popen, timeout_s: float, what: str, stderr_path: Path):
    """The first line `proc` prints, parsed as JSON; fails after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    fd = proc.stdout.fileno()
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"{what} printed nothing within {timeout_s} s; stderr:\n"
                        f"{stderr_path.read_text()}")
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"{what} exited with {proc.wait()} before printing; stderr:\n"
                            f"{stderr_path.read_text()}")
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def _stop(proc: subprocess.Popen) -> int:
    """Ask an advertiser process to say goodbye and exit; kill it if it does not."""
    if proc.poll() is None:
        try:
            proc.stdin.write(b"stop\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def test_name_conflict_is_resolved_by_renaming(two_hosts, tmp_path):
    first_host, second_host = two_hosts
    shared = f"printhost-clash-{uuidlib.uuid4().hex[:8]}"
    first_uuid, second_uuid = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    env = _child_env()
    procs: list[subprocess.Popen] = []

    def advertise(host: _Host, port: int, uid: str, label: str) -> list[str]:
        stderr_path = tmp_path / f"{label}.stderr"
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, sys.executable, "-c",
                 _ADVERTISER_PROGRAM, shared, str(port), uid, host.address],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        procs.append(proc)
        # Start-up, probing (twice over for a renamed instance) and announcing take
        # a few seconds; the deadline leaves room for a busy machine.
        out = _read_json_line(proc, 20, f"{label} advertiser", stderr_path)
        assert out["started"] is True, out
        return out["names"]

    try:
        # The first printer is alone on the LAN and keeps its name.
        first_names = advertise(first_host, 7133, first_uuid, "first")
        assert first_names == [f"{shared}.{SERVICE_TYPE}", f"{shared}.{HTTP_SERVICE_TYPE}"]

        # The second printer joins with the same name: its probes are answered by the
        # first, so both of its instances are renamed.
        second_names = advertise(second_host, 7134, second_uuid, "second")
        for mine, theirs in zip(second_names, first_names):
            assert mine != theirs
            assert mine.startswith(shared)
        assert second_names[0].endswith(f".{SERVICE_TYPE}")
        assert second_names[1].endswith(f".{HTTP_SERVICE_TYPE}")

        # A client on the LAN resolves all four instances to the right printer.
        wanted = [(SERVICE_TYPE, first_names[0]), (HTTP_SERVICE_TYPE, first_names[1]),
                  (SERVICE_TYPE, second_names[0]), (HTTP_SERVICE_TYPE, second_names[1])]
        observer = subprocess.run(
            ["ip", "netns", "exec", first_host.netns, sys.executable, "-c",
             _OBSERVER_PROGRAM, first_host.address, json.dumps(wanted)],
            capture_output=True, env=env, timeout=30)
        assert observer.returncode == 0, observer.stderr.decode()
        found = json.loads(observer.stdout)
        for (_, name), host, port, uid in zip(
                wanted, [first_host, first_host, second_host, second_host],
                [7133, 7133, 7134, 7134], [first_uuid, first_uuid, second_uuid, second_uuid]):
            got = found[name]
            assert got is not None, f"{name} did not resolve: {found}"
            assert got["port"] == port, (name, got)
            assert got["addresses"] == [host.address], (name, got)
            assert got["txt"]["uuid"] == uid, (name, got)

        for proc in procs:
            assert _stop(proc) == 0
    finally:
        for proc in procs:
            _stop(proc)


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
    assert adv.txt_records(HTTP_SERVICE_TYPE)["path"] == "/"


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
