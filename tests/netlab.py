"""A real network on one machine: two NATs, a STUN server and two peers.

Test support, not a test.  Built from the measured facts in
``/work/shared/notes/netlab.md``::

    peer-a 10.0.1.2 ─lan─ nat-a (10.0.1.1 | 198.51.100.2) ─┐
                                                            ├─ wan: bridge br0 198.51.100.1
    peer-b 10.0.2.2 ─lan─ nat-b (10.0.2.1 | 198.51.100.3) ─┤       (not forwarding)
                             stun (198.51.100.10 and .11) ──┘
                               coturn STUN-only on :3478; signaling goes on .10:8787

With ``nat_X="none"`` the peer has a public address instead (203.0.113.2 for a,
203.0.113.130 for b) behind a plain router.  Nothing is connected to the root
namespace, so no packet can leave the lab.

Isolation (why a helper process): every lab owns one long-lived helper,
``unshare --mount --propagation private sleep``, whose private mount namespace
has a tmpfs on ``/run``.  Every command runs through
``nsenter --target HELPER --mount``, so ``ip netns`` names exist only in that
tmpfs: the root mount namespace's ``ip netns list`` never shows them, labs
with the same names can run in parallel, and coturn's default pid file stays
private.  When the last process of that mount namespace exits, the tmpfs and
the namespace bind mounts on it go away with it.  The helper and every
process started by :meth:`NetLab.run` get ``PR_SET_PDEATHSIG=SIGKILL``, so a
SIGKILLed test run leaks nothing either.  (Calling ``unshare(CLONE_NEWNS)`` in
the test process itself would move the whole pytest process for good, and
fails with EINVAL once it has threads, e.g. asyncio's resolver pool.)

``ip netns exec NS prog`` and ``nsenter`` without a PID namespace both exec, so
``Popen.pid`` is ``prog``'s own pid: teardown kills by that recorded pid (its
process group, as :meth:`NetLab.run` starts a new session), then anything
still inside the lab's network namespaces (found by namespace inode), then
deletes the namespaces and the helper.

Run as a script, this module also provides the lab's two small standard-library
tools: ``nfqueue-delay QUEUE MS`` (a user-space delayer, as this kernel has no
netem) and ``conntrack-flush`` (what ``conntrack -F`` does, via netlink).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

NAT_MODES: Final = ("cone", "full_cone", "symmetric", "udp_blocked", "none")
ROLES: Final = ("peer-a", "nat-a", "peer-b", "nat-b", "wan", "stun")
STUN_PORT: Final = 3478
SIGNALING_PORT: Final = 8787
REQUIRED_TOOLS: Final = (
    "ip",
    "iptables",
    "iptables-restore",
    "tc",
    "turnserver",
    "unshare",
    "nsenter",
)
_SBIN: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PR_SET_PDEATHSIG: Final = 1
# Public LANs for nat mode "none" (TEST-NET-3 halves).
_PUBLIC_LAN: Final = {"a": "203.0.113.0/25", "b": "203.0.113.128/25"}
_STOP_GRACE: Final = 3.0


class NetLabError(RuntimeError):
    """A lab command failed; the message carries the command's stderr."""


# -- availability ------------------------------------------------------------------


def _search_path() -> str:
    return os.environ.get("PATH", "") + ":" + _SBIN


@functools.cache
def netlab_available() -> tuple[bool, str]:
    """(True, "") when labs can run here, else (False, one-line reason)."""
    if not sys.platform.startswith("linux"):
        return False, "netlab needs Linux network namespaces"
    if os.geteuid() != 0:
        return False, "netlab needs root (network namespaces, iptables)"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t, path=_search_path()) is None]
    if missing:
        return False, (
            f"netlab needs {', '.join(missing)} (apt-get install coturn iproute2 iptables util-linux)"
        )
    unshare = shutil.which("unshare", path=_search_path())
    assert unshare is not None
    probe = subprocess.run(
        [unshare, "--mount", "--net", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if probe.returncode != 0:
        return False, f"netlab cannot create namespaces here: {probe.stderr.strip()[:200]}"
    return True, ""


def require_netlab() -> None:
    """Skip the calling test when labs cannot run; under CI=true, fail instead."""
    import pytest

    ok, reason = netlab_available()
    if ok:
        return
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


# -- processes ---------------------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the test process dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _netns_inode(pid: int) -> int | None:
    try:
        link = os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return int(link[link.index("[") + 1 : -1])


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stop(procs: Sequence[subprocess.Popen[Any]], grace: float = _STOP_GRACE) -> None:
    """SIGTERM each live process's group, then SIGKILL what is left after ``grace``.

    Only a leader that is still our unreaped child is signalled, so its pid
    (and group id) cannot have been reused by an unrelated process.
    """
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in live:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        elif proc.returncode is not None:
            # The leader exited; members it left in its group go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


# -- the lab -----------------------------------------------------------------------


class NetLab:
    """Context manager building the topology above; see the module docstring.

    ``nat_a``/``nat_b``: ``"cone"`` (port-restricted), ``"full_cone"``,
    ``"symmetric"``, ``"udp_blocked"`` or ``"none"`` (public address, no filter).
    ``lab.addresses`` maps ``peer-a``, ``gw-a``, ``nat-a`` (public), ``peer-b``,
    ``gw-b``, ``nat-b``, ``wan``, ``stun``, ``stun2``, ``signaling`` to IPv4
    addresses; ``lab.stun_url`` is ``"stun:198.51.100.10:3478"``.
    Sides for the impairment helpers are ``"a"`` and ``"b"``; each acts in that
    side's router namespace (``nat-a``/``nat-b``), so it affects both directions
    of that peer's traffic.
    """

    def __init__(
        self,
        prefix: str = "nl",
        nat_a: str = "cone",
        nat_b: str = "cone",
        stun: bool = True,
    ) -> None:
        for mode in (nat_a, nat_b):
            if mode not in NAT_MODES:
                raise ValueError(f"unknown NAT mode {mode!r}; use one of {NAT_MODES}")
        self.prefix = prefix
        self.nat = {"a": nat_a, "b": nat_b}
        self.stun = stun
        self.addresses: dict[str, str] = {
            "wan": "198.51.100.1",
            "nat-a": "198.51.100.2",
            "nat-b": "198.51.100.3",
            "stun": "198.51.100.10",
            "stun2": "198.51.100.11",
            "signaling": "198.51.100.10",
        }
        for side, index in (("a", 1), ("b", 2)):
            if self.nat[side] == "none":
                base = _PUBLIC_LAN[side].split("/")[0].rsplit(".", 1)
                self.addresses[f"gw-{side}"] = f"{base[0]}.{int(base[1]) + 1}"
                self.addresses[f"peer-{side}"] = f"{base[0]}.{int(base[1]) + 2}"
            else:
                self.addresses[f"gw-{side}"] = f"10.0.{index}.1"
                self.addresses[f"peer-{side}"] = f"10.0.{index}.2"
        self.stun_url = f"stun:{self.addresses['stun']}:{STUN_PORT}"
        self.stun_servers = [
            (self.addresses["stun"], STUN_PORT),
            (self.addresses["stun2"], STUN_PORT),
        ]
        self.signaling_address = (self.addresses["signaling"], SIGNALING_PORT)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"netlab-{prefix}-"))
        self.timings: dict[str, float] = {}
        self.turnserver: subprocess.Popen[bytes] | None = None
        self._env = {**os.environ, "PATH": _search_path()}
        self._tool = {t: shutil.which(t, path=_search_path()) or t for t in REQUIRED_TOOLS}
        self._helper: subprocess.Popen[bytes] | None = None
        self._mount_ns: int | None = None
        self._netns: dict[str, int] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        self._delayers: dict[str, subprocess.Popen[Any]] = {}
        self._loss: dict[str, str] = {}
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> NetLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        started = time.monotonic()
        try:
            self._start_helper()
            self._sh(self._topology_script(), timeout=60)
            self._record_namespaces()
            self.timings["up_s"] = time.monotonic() - started
            if self.stun:
                self._start_turnserver()
                self.timings["stun_s"] = time.monotonic() - started - self.timings["up_s"]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every process, delete every namespace; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        started = time.monotonic()
        try:
            _stop(list(self._delayers.values()) + self._procs)
            for proc in self._delayers.values():
                if proc.stdout is not None:
                    proc.stdout.close()
            self._kill_namespace_members()
            if self._helper is not None and self._helper.poll() is None:
                script = "\n".join(f"ip netns del {self.ns(r)} 2>/dev/null || true" for r in ROLES)
                with contextlib.suppress(NetLabError, subprocess.TimeoutExpired):
                    self._sh(script, timeout=30)
        finally:
            if self._helper is not None:
                _stop([self._helper], grace=0.0)
                if self._helper.stdout is not None:
                    self._helper.stdout.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.timings["down_s"] = time.monotonic() - started

    def leftovers(self) -> list[str]:
        """What of this lab still exists (for tests asserting a clean teardown)."""
        found = [f"pid {p.pid} {p.args!r}" for p in self._procs if p.poll() is None]
        if self._helper is not None and self._helper.poll() is None:
            found.append(f"helper pid {self._helper.pid}")
        inodes = set(self._netns.values())
        for pid in _pids():
            if _netns_inode(pid) in inodes:
                found.append(f"pid {pid} inside a lab network namespace")
            elif self._mount_ns is not None and _mount_inode(pid) == self._mount_ns:
                found.append(f"pid {pid} inside the lab's mount namespace")
        if self.workdir.exists():
            found.append(f"work directory {self.workdir}")
        return found

    # -- running things ------------------------------------------------------------

    def ns(self, role: str) -> str:
        """Full namespace name of a role (``"peer-a"`` -> ``"<prefix>-peer-a"``)."""
        if role in ROLES:
            return f"{self.prefix}-{role}"
        if role.startswith(f"{self.prefix}-") and role[len(self.prefix) + 1 :] in ROLES:
            return role
        raise ValueError(f"unknown lab namespace {role!r}; roles are {ROLES}")

    def _enter(self, cwd: str | os.PathLike[str] | None = None) -> list[str]:
        if self._helper is None or self._helper.poll() is not None:
            raise NetLabError("the lab is not running")
        wd = os.fspath(cwd) if cwd is not None else os.getcwd()
        return [self._tool["nsenter"], f"--target={self._helper.pid}", "--mount", f"--wd={wd}"]

    def run(self, ns: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside namespace ``ns``; ``Popen.pid`` is the program's pid.

        Defaults: stdin from /dev/null, a new session (teardown signals the
        process group), PATH including /usr/sbin.  The process is stopped at
        teardown if still running.
        """
        cmd = [*self._enter(popen_kwargs.get("cwd")), "--", "ip", "netns", "exec", self.ns(ns)]
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        popen_kwargs.setdefault("start_new_session", True)
        popen_kwargs.setdefault("env", self._env)
        user_preexec = popen_kwargs.pop("preexec_fn", None)

        def preexec() -> None:
            _die_with_parent()
            if user_preexec is not None:
                user_preexec()

        proc = subprocess.Popen([*cmd, *argv], preexec_fn=preexec, **popen_kwargs)
        self._procs.append(proc)
        return proc

    def execute(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside ``ns`` to completion."""
        result = subprocess.run(
            [*self._enter(), "--", "ip", "netns", "exec", self.ns(ns), *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env,
            preexec_fn=_die_with_parent,
        )
        if check and result.returncode != 0:
            raise NetLabError(
                f"{' '.join(argv)} in {ns} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def wait_listening(
        self, proc: subprocess.Popen[Any], port: int, proto: str = "tcp", timeout: float = 10.0
    ) -> None:
        """Wait until ``proc``'s network namespace has a socket bound to ``port``."""
        tables = ("tcp", "tcp6") if proto == "tcp" else ("udp", "udp6")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise NetLabError(f"{proc.args!r} exited {proc.returncode} before listening")
            if any(port in _bound_ports(proc.pid, table) for table in tables):
                return
            time.sleep(0.02)
        raise NetLabError(f"nothing listens on {proto} port {port} after {timeout} s")

    # -- impairments ---------------------------------------------------------------

    def _router(self, side: str) -> str:
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'a' or 'b', not {side!r}")
        return f"nat-{side}"

    def loss(self, side: str, probability: float) -> None:
        """Drop forwarded packets at random at that side's router (0 removes)."""
        router = self._router(side)
        old = self._loss.pop(side, None)
        if old is not None:
            self.execute(router, ["iptables", "-t", "mangle", "-D", "FORWARD", *old.split()])
        if probability > 0:
            # Inserted first: an NFQUEUE verdict (delay) would end the chain.
            rule = f"-m statistic --mode random --probability {probability:.6f} -j DROP"
            self.execute(router, ["iptables", "-t", "mangle", "-I", "FORWARD", "1", *rule.split()])
            self._loss[side] = rule

    def rate(self, side: str, rate: str | None) -> None:
        """Cap that side's link to ``rate`` (tc syntax, e.g. "8mbit") both ways; None removes."""
        router = self._router(side)
        for dev in ("wan0", "lan0"):
            if rate is None:
                self.execute(router, ["tc", "qdisc", "del", "dev", dev, "root"], check=False)
            else:
                self.execute(
                    router,
                    ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                     "burst", "32kbit", "latency", "200ms"],
                )  # fmt: skip

    def cut(self, side: str) -> None:
        """Drop everything that side's router forwards (the link is cut)."""
        self.execute(
            self._router(side),
            ["iptables", "-I", "FORWARD", "1", "-m", "comment", "--comment", "netlab-cut", "-j", "DROP"],
        )  # fmt: skip

    def restore(self, side: str) -> None:
        """Undo :meth:`cut` (every cut rule on that side)."""
        rule = ["FORWARD", "-m", "comment", "--comment", "netlab-cut", "-j", "DROP"]
        while (
            self.execute(self._router(side), ["iptables", "-D", *rule], check=False).returncode == 0
        ):
            pass

    def flush_conntrack(self, side: str) -> None:
        """Forget every connection that side's router tracks (NAT rebinding)."""
        self.execute(self._router(side), [sys.executable, __file__, "conntrack-flush"])

    def conntrack_count(self, side: str) -> int:
        result = self.execute(
            self._router(side), ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]
        )
        return int(result.stdout.strip())

    def delay(self, side: str, ms: float) -> None:
        """Delay every packet that side's router forwards by ``ms`` (each way; 0 removes).

        A user-space NFQUEUE delayer (this kernel has no netem); with
        ``--queue-bypass`` traffic keeps flowing unshaped if it is not running.
        Call it from a thread that outlives the delay: the delayer is killed
        (PR_SET_PDEATHSIG) when the thread that started it exits.
        """
        router = self._router(side)
        queue = 0 if side == "a" else 1
        rule = ["FORWARD", "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]
        old = self._delayers.pop(side, None)
        if old is not None:
            self.execute(router, ["iptables", "-t", "mangle", "-D", *rule], check=False)
            _stop([old])
            if old.stdout is not None:
                old.stdout.close()
        if ms <= 0:
            return
        proc = self.run(
            router,
            [sys.executable, __file__, "nfqueue-delay", str(queue), str(ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._delayers[side] = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "bound":
            raise NetLabError(f"NFQUEUE delayer did not start ({line.strip() or 'no output'})")
        self.execute(router, ["iptables", "-t", "mangle", "-A", *rule])

    # -- building --------------------------------------------------------------------

    def _start_helper(self) -> None:
        script = "mount -t tmpfs -o mode=0755,size=4m netlab /run && mkdir /run/netns && echo ready && exec sleep infinity"
        self._helper = subprocess.Popen(
            [
                self._tool["unshare"],
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=self._env,
        )
        assert self._helper.stdout is not None
        ready, _, _ = select.select([self._helper.stdout], [], [], 10.0)
        if not ready or self._helper.stdout.readline().strip() != b"ready":
            self._helper.kill()
            _, err = self._helper.communicate(timeout=5)
            raise NetLabError(f"mount namespace helper failed: {err.decode(errors='replace')}")
        self._mount_ns = _mount_inode(self._helper.pid)

    def _sh(self, script: str, timeout: float = 30.0) -> str:
        result = subprocess.run(
            [*self._enter(), "--", "sh", "-ec", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env,
            preexec_fn=_die_with_parent,
        )
        if result.returncode != 0:
            raise NetLabError(f"lab set-up failed: {result.stderr.strip()}")
        return result.stdout

    def _topology_script(self) -> str:
        n = {role: self.ns(role) for role in ROLES}
        a = self.addresses
        lines = [f"export PATH={_SBIN}"]
        for name in n.values():
            lines += [
                f"ip netns add {name}",
                f"ip netns exec {name} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                "net.ipv6.conf.default.disable_ipv6=1",
                f"ip -n {name} link set lo up",
            ]
        wan = n["wan"]
        lines += [
            f"ip -n {wan} link add br0 type bridge",
            f"ip -n {wan} addr add {a['wan']}/24 dev br0",
            f"ip -n {wan} link set br0 up",
        ]
        for side in ("a", "b"):
            nat, peer = n[f"nat-{side}"], n[f"peer-{side}"]
            prefix_len = 25 if self.nat[side] == "none" else 24
            lines += [
                f"ip -n {nat} link add wan0 type veth peer name nat-{side} netns {wan}",
                f"ip -n {wan} link set nat-{side} master br0 up",
                f"ip -n {nat} addr add {a[f'nat-{side}']}/24 dev wan0",
                f"ip -n {nat} link set wan0 up",
                f"ip -n {peer} link add eth0 type veth peer name lan0 netns {nat}",
                f"ip -n {nat} addr add {a[f'gw-{side}']}/{prefix_len} dev lan0",
                f"ip -n {nat} link set lan0 up",
                f"ip -n {peer} addr add {a[f'peer-{side}']}/{prefix_len} dev eth0",
                f"ip -n {peer} link set eth0 up",
                f"ip -n {peer} route add default via {a[f'gw-{side}']}",
                # Without a default route coturn drops allocations (netlab.md).
                f"ip -n {nat} route add default via {a['wan']}",
                f"ip netns exec {nat} sysctl -qw net.ipv4.ip_forward=1",
            ]
            rules = self._ruleset(side)
            if rules:
                lines.append(f"ip netns exec {nat} iptables-restore <<'RULES'\n{rules}RULES")
        stun = n["stun"]
        lines += [
            f"ip -n {stun} link add eth0 type veth peer name stun netns {wan}",
            f"ip -n {wan} link set stun master br0 up",
            f"ip -n {stun} addr add {a['stun']}/24 dev eth0",
            f"ip -n {stun} addr add {a['stun2']}/24 dev eth0",
            f"ip -n {stun} link set eth0 up",
            f"ip -n {stun} route add default via {a['wan']}",
        ]
        # A public ("none") LAN is routed by its router; the others must know the way.
        for side, other in (("a", "b"), ("b", "a")):
            if self.nat[side] == "none":
                for router in (n["stun"], n[f"nat-{other}"]):
                    lines.append(
                        f"ip -n {router} route add {_PUBLIC_LAN[side]} via {a[f'nat-{side}']}"
                    )
        return "\n".join(lines) + "\n"

    def _ruleset(self, side: str) -> str | None:
        """iptables-restore input for that side's router (netlab.md, NAT behaviours)."""
        mode = self.nat[side]
        if mode == "none":
            return None
        peer = self.addresses[f"peer-{side}"]
        forward = []
        if mode == "udp_blocked":
            forward.append("-A FORWARD -p udp -j DROP")
        forward += [
            "-A FORWARD -i lan0 -o wan0 -j ACCEPT",
            "-A FORWARD -i wan0 -o lan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        ]
        if mode == "full_cone":
            forward.append(f"-A FORWARD -i wan0 -o lan0 -p udp -d {peer} -j ACCEPT")
        masquerade = "-A POSTROUTING -o wan0 -j MASQUERADE"
        if mode == "symmetric":
            masquerade += " --random-fully"
        nat = [masquerade]
        if mode == "full_cone":
            nat.append(f"-A PREROUTING -i wan0 -p udp -j DNAT --to-destination {peer}")
        return "\n".join(
            [
                "*filter",
                ":INPUT ACCEPT [0:0]",
                ":FORWARD DROP [0:0]",
                ":OUTPUT ACCEPT [0:0]",
                *forward,
                "-A INPUT -i wan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "-A INPUT -i wan0 -p icmp -j ACCEPT",
                # Essential: without it even cone<->cone fails (netlab.md).
                "-A INPUT -i wan0 -j DROP",
                "COMMIT",
                "*nat",
                ":PREROUTING ACCEPT [0:0]",
                ":INPUT ACCEPT [0:0]",
                ":OUTPUT ACCEPT [0:0]",
                ":POSTROUTING ACCEPT [0:0]",
                *nat,
                "COMMIT",
                "",
            ]
        )

    def _record_namespaces(self) -> None:
        script = "\n".join(
            f'echo "{self.ns(role)} $(stat -L -c %i /run/netns/{self.ns(role)})"' for role in ROLES
        )
        for line in self._sh(script).splitlines():
            name, inode = line.split()
            self._netns[name] = int(inode)

    def _start_turnserver(self) -> None:
        log = open(self.workdir / "turnserver.log", "wb")  # noqa: SIM115 - the child owns it
        try:
            self.turnserver = self.run(
                "stun",
                [
                    "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls",
                    "-L", self.addresses["stun"], "-L", self.addresses["stun2"],
                    "--listening-port", str(STUN_PORT), "--stun-only",
                    # Keep its files in the work directory, not /var/log.
                    "--log-file", "stdout", "--pidfile", str(self.workdir / "turnserver.pid"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        self.wait_listening(self.turnserver, STUN_PORT, proto="udp")

    def _kill_namespace_members(self) -> None:
        """SIGKILL anything still inside the lab's network namespaces.

        Everything there was started by this lab (nothing else can enter a
        namespace that only this lab's mount namespace names).
        """
        inodes = set(self._netns.values())
        if not inodes:
            return
        for _ in range(3):
            members = [pid for pid in _pids() if _netns_inode(pid) in inodes]
            if not members:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
            for proc in self._procs:
                proc.poll()


def _mount_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _bound_ports(pid: int, table: str) -> set[int]:
    """Local ports in /proc/PID/net/TABLE (that process's network namespace)."""
    try:
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            return {int(line.split()[1].rsplit(":", 1)[1], 16) for line in f if line.strip()}
    except (OSError, StopIteration, ValueError, IndexError):
        return set()


# -- stdlib netlink tools (run inside a namespace as a script) -------------------------

_NETLINK_NETFILTER: Final = 12
_NLM_F_REQUEST: Final = 0x1
_NLM_F_ACK: Final = 0x4
_NLMSG_ERROR: Final = 0x2
_NFNL_SUBSYS_CTNETLINK: Final = 1
_IPCTNL_MSG_CT_DELETE: Final = 2
_NFNL_SUBSYS_QUEUE: Final = 3
_NFQNL_MSG_PACKET: Final = 0
_NFQNL_MSG_VERDICT: Final = 1
_NFQNL_MSG_CONFIG: Final = 2
_NFQA_PACKET_HDR: Final = 1
_NFQA_VERDICT_HDR: Final = 2
_NFQA_CFG_CMD: Final = 1
_NFQA_CFG_PARAMS: Final = 2
_NFQA_CFG_QUEUE_MAXLEN: Final = 3
_NFQNL_CFG_CMD_BIND: Final = 1
_NFQNL_COPY_META: Final = 1
_NF_ACCEPT: Final = 1


def _nlmsg(msg_type: int, flags: int, family: int, res_id: int, attrs: bytes = b"") -> bytes:
    body = struct.pack("!BBH", family, 0, res_id) + attrs  # nfgenmsg; res_id is big-endian
    return struct.pack("=IHHII", 16 + len(body), msg_type, flags, 0, 0) + body


def _nla(attr_type: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), attr_type) + payload
    return data + b"\0" * (-len(data) % 4)


def _check_ack(sock: socket.socket) -> None:
    data = sock.recv(65536)
    _, msg_type = struct.unpack_from("=IH", data)
    if msg_type == _NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", data, 16)
        if error != 0:
            raise OSError(-error, os.strerror(-error))


def conntrack_flush() -> None:
    """Delete every conntrack entry of this network namespace (``conntrack -F``)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        msg_type = (_NFNL_SUBSYS_CTNETLINK << 8) | _IPCTNL_MSG_CT_DELETE
        for family in (socket.AF_INET, socket.AF_INET6):
            sock.send(_nlmsg(msg_type, _NLM_F_REQUEST | _NLM_F_ACK, family, 0))
            _check_ack(sock)


def nfqueue_delay(queue: int, delay_ms: float) -> None:
    """Hold each packet of NFQUEUE ``queue`` for ``delay_ms``, then accept it.

    Packets are released in arrival order (one constant delay keeps FIFO
    order).  Prints ``bound`` once the queue is bound.
    """
    delay = delay_ms / 1000.0
    config = (_NFNL_SUBSYS_QUEUE << 8) | _NFQNL_MSG_CONFIG
    verdict_type = (_NFNL_SUBSYS_QUEUE << 8) | _NFQNL_MSG_VERDICT
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, 33, 8 * 1024 * 1024)  # SO_RCVBUFFORCE
        bind = struct.pack("!BBH", _NFQNL_CFG_CMD_BIND, 0, socket.AF_INET)
        sock.send(_nlmsg(config, _NLM_F_REQUEST | _NLM_F_ACK, 0, queue, _nla(_NFQA_CFG_CMD, bind)))
        _check_ack(sock)
        params = _nla(_NFQA_CFG_PARAMS, struct.pack("!IB", 0, _NFQNL_COPY_META))
        maxlen = _nla(_NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 16384))
        sock.send(_nlmsg(config, _NLM_F_REQUEST | _NLM_F_ACK, 0, queue, params + maxlen))
        _check_ack(sock)
        print("bound", flush=True)
        held: deque[tuple[float, int]] = deque()
        while True:
            timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
            ready, _, _ = select.select([sock], [], [], timeout)
            if ready:
                try:
                    data = sock.recv(262144)
                except OSError:  # ENOBUFS: messages lost; the queue keeps the packets
                    continue
                arrived = time.monotonic()
                for packet_id in _packet_ids(data):
                    held.append((arrived + delay, packet_id))
            now = time.monotonic()
            while held and held[0][0] <= now:
                _, packet_id = held.popleft()
                verdict = _nla(_NFQA_VERDICT_HDR, struct.pack("!II", _NF_ACCEPT, packet_id))
                sock.send(_nlmsg(verdict_type, _NLM_F_REQUEST, 0, queue, verdict))


def _packet_ids(data: bytes) -> list[int]:
    ids = []
    offset = 0
    packet_type = (_NFNL_SUBSYS_QUEUE << 8) | _NFQNL_MSG_PACKET
    while offset + 16 <= len(data):
        length, msg_type = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if msg_type == packet_type:
            attr = offset + 20  # nlmsghdr + nfgenmsg
            end = offset + length
            while attr + 4 <= end:
                attr_len, attr_type = struct.unpack_from("=HH", data, attr)
                if attr_len < 4:
                    break
                if attr_type & 0x7FFF == _NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, attr + 4)[0])
                    break
                attr += (attr_len + 3) & ~3
        offset += (length + 3) & ~3
    return ids


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["conntrack-flush"]:
        conntrack_flush()
        return 0
    if argv[:1] == ["nfqueue-delay"] and len(argv) == 3:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        nfqueue_delay(int(argv[1]), float(argv[2]))
        return 0
    print("usage: netlab.py conntrack-flush | nfqueue-delay QUEUE MS", file=sys.stderr)
    return 2


# -- additions: forgetting only the UDP mappings ----------------------------------------
#
# A NAT that forgets its UDP mappings while keeping TCP ones is the common
# rebinding case (UDP mapping timeouts are short, TCP ones long): the peers'
# UDP path moves to new ports while their signaling sockets survive.

_NLM_F_DUMP: Final = 0x300
_NLMSG_DONE: Final = 0x3
_IPCTNL_MSG_CT_GET: Final = 1
_CTA_TUPLE_ORIG: Final = 1
_CTA_TUPLE_PROTO: Final = 2
_CTA_PROTO_NUM: Final = 1


def _attrs(data: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Netlink attributes in ``data[start:end]``: type -> (offset of header, length)."""
    found = {}
    while start + 4 <= end:
        length, attr_type = struct.unpack_from("=HH", data, start)
        if length < 4:
            break
        found[attr_type & 0x7FFF] = (start, length)
        start += (length + 3) & ~3
    return found


def conntrack_flush_udp() -> int:
    """Delete this namespace's IPv4 UDP conntrack entries (``conntrack -D -p udp``); returns how many."""
    msg_type = (_NFNL_SUBSYS_CTNETLINK << 8) | _IPCTNL_MSG_CT_GET
    tuples: list[bytes] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        sock.send(_nlmsg(msg_type, _NLM_F_REQUEST | _NLM_F_DUMP, socket.AF_INET, 0))
        done = False
        while not done:
            data = sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if length < 16 or kind == _NLMSG_DONE:
                    done = True
                    break
                if kind == _NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, offset + 16)
                    raise OSError(-error, os.strerror(-error))
                top = _attrs(data, offset + 20, offset + length)
                if _CTA_TUPLE_ORIG in top:
                    t_start, t_len = top[_CTA_TUPLE_ORIG]
                    proto = _attrs(data, t_start + 4, t_start + t_len).get(_CTA_TUPLE_PROTO)
                    if proto is not None:
                        num = _attrs(data, proto[0] + 4, proto[0] + proto[1]).get(_CTA_PROTO_NUM)
                        if num is not None and data[num[0] + 4] == socket.IPPROTO_UDP:
                            tuples.append(data[t_start : t_start + ((t_len + 3) & ~3)])
                offset += (length + 3) & ~3
        delete = (_NFNL_SUBSYS_CTNETLINK << 8) | _IPCTNL_MSG_CT_DELETE
        deleted = 0
        for attr in tuples:
            sock.send(_nlmsg(delete, _NLM_F_REQUEST | _NLM_F_ACK, socket.AF_INET, 0, attr))
            try:
                _check_ack(sock)
                deleted += 1
            except FileNotFoundError:  # ENOENT: it expired meanwhile
                pass
    return deleted


def flush_udp_conntrack(lab: NetLab, side: str) -> int:
    """Make that side's router forget its UDP mappings only (TCP ones survive)."""
    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "from tests.netlab import conntrack_flush_udp; print(conntrack_flush_udp())"
    )
    result = lab.execute(lab._router(side), [sys.executable, "-c", code])
    return int(result.stdout.strip())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
