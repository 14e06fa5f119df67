"""vunet: network stacks per process (issue 11, seeds 002 and 004).

Stacks are libvdestack namespaces on VDE networks: a switch of the test's
own (`vde_plug switch://` on a temporary path), slirp:// for the way out,
null:// for a lone stack. Traffic leaves the stacks only for the host's
loopback (the slirp test's server). The host's interfaces are checked
unchanged after every session."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import NOBODY, REPO, nobody_dir

DATA = REPO / "tests" / "data"
PEER = DATA / "vunet_peer.py"
XFER = DATA / "vunet_xfer.py"


@pytest.fixture(autouse=True)
def vde_installed():
    """libvdestack0 and vdeplug are installed by make (DEB_PACKAGES): their
    absence fails, it is not skipped."""
    assert Path("/usr/lib/x86_64-linux-gnu/libvdestack.so.0").exists() and \
        shutil.which("vde_plug"), "libvdestack0 and vdeplug missing: `make deps`"


def host_links() -> str:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return re.sub(r"\\.*", "", out)       # names and flags, not counters


def tun_usable_by_nobody() -> bool:
    st = os.stat("/dev/net/tun")
    return bool(st.st_mode & stat.S_IROTH and st.st_mode & stat.S_IWOTH)


@pytest.fixture
def links():
    before = host_links()
    yield
    assert host_links() == before, "the host's interfaces changed"


class Switch:
    """A VDE switch of the test's own (vde_plug switch://), run by `user`:
    vde://PATH plugs into it."""

    def __init__(self, user=None):
        self.dir = Path(tempfile.mkdtemp(prefix="umvu-vde-", dir="/tmp"))
        if user is not None:
            os.chown(self.dir, user, user)
        path = self.dir / "sw"
        argv = ["vde_plug", f"switch://{path}", "null://"]
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}",
                    "--clear-groups", "--", *argv]
        self.plug = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            if path.exists():
                break
            time.sleep(0.05)
        self.url = f"vde://{path}"

    def close(self):
        self.plug.kill()
        self.plug.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def switch():
    sw = Switch()
    yield sw.url
    sw.close()


def check(res):
    assert res.returncode == 0, f"rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


SETUP = "set -e; vu_insmod vunet\n"


# ---- seeds ---------------------------------------------------------------------

def test_seed_002_ip_addr_and_ping(run_umvu, switch, links):
    """vumount -t vunetvdestack; vustack STACK ip addr; addresses with ip,
    busybox ping across the switch to a second stack."""
    out = check(run_umvu(SETUP + textwrap.dedent(f"""\
        vumount -t vunetvdestack {switch} /dev/net/mynet
        vumount -t vunetvdestack {switch} /dev/net/other
        stat -c '%f' /dev/net/mynet
        vustack /dev/net/mynet ip addr
        vustack /dev/net/other sh -c 'ip addr add 192.168.250.1/24 dev vde0; ip link set vde0 up'
        vustack /dev/net/mynet bash -c '
            ip addr add 192.168.250.24/24 dev vde0
            ip link set vde0 up
            ip addr show vde0
            busybox ping -c 2 -W 3 192.168.250.1'
        ip addr | grep -c vde0 || true
        vuumount /dev/net/mynet; vuumount /dev/net/other
        """), timeout=90))
    assert out.splitlines()[0] == "e1ff"          # S_IFSTACK | 0777
    assert "vde0:" in out and "lo:" in out
    assert "inet 192.168.250.24/24" in out
    assert "2 packets received" in out or "2 received" in out
    assert out.rstrip().splitlines()[-1] == "0"   # no vde0 outside the stack


def test_two_views_on_one_switch(run_umvu, switch, links):
    """Two umvu sessions, one stack each on the same switch: TCP and UDP
    both ways, ICMP datagram sockets (ping)."""
    def script(me, other):
        return SETUP + textwrap.dedent(f"""\
            vumount -t vunetvdestack {switch} /dev/net/n
            vustack /dev/net/n sh -c 'ip addr add {me}/24 dev vde0 && ip link set vde0 up'
            vustack /dev/net/n python3 {PEER} {me} {other}
            """)
    a = run_umvu.popen(script("10.55.0.1", "10.55.0.2"))
    b = run_umvu.popen(script("10.55.0.2", "10.55.0.1"))
    out_a, err_a = a.communicate(timeout=90)
    out_b, err_b = b.communicate(timeout=90)
    assert a.returncode == 0 and b.returncode == 0, (out_a, err_a, out_b, err_b)
    for out, me, other in ((out_a, "10.55.0.1", "10.55.0.2"),
                           (out_b, "10.55.0.2", "10.55.0.1")):
        assert f"tcp tcp from {me} peer {other}" in out, out
        assert f"udp udp from {me} peer {other}" in out, out
        assert f"icmp reply 0 from {other}" in out, out


def test_seed_004_slirp_dhcp_and_host_loopback(run_umvu, links, tmp_path):
    """vunetpicox slirp://: udhcpc obtains 10.0.2.15; TCP through the slirp
    gateway reaches a server on the host's loopback."""
    script = tmp_path / "dhcp.sh"
    script.write_text(textwrap.dedent("""\
        #!/bin/sh
        # udhcpc's script for the test: the address and route, no resolv.conf
        case $1 in
        deconfig) ip link set $interface up; ip -4 addr flush dev $interface ;;
        bound|renew) ip addr add $ip/${mask:-24} dev $interface
                     [ -n "$router" ] && ip route add default via ${router%% *} ;;
        esac
        exit 0
        """))
    script.chmod(0o755)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    got = []

    def serve():
        srv.settimeout(60)
        conn, addr = srv.accept()
        got.append((conn.recv(100), addr))
        conn.sendall(b"hello from the host")
        conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    out = check(run_umvu(SETUP + textwrap.dedent(f"""\
        vumount -t vunetpicox slirp:// /dev/net/picox
        vustack /dev/net/picox bash -c '
            udhcpc -i vde0 -n -q -t 5 -T 2 -s {script} 2>&1
            ip addr show vde0
            ip route
            python3 -c "
        import socket
        c = socket.create_connection((\\"10.0.2.2\\", {port}), timeout=10)
        c.sendall(b\\"through slirp\\")
        print(\\"reply:\\", c.recv(100).decode(), c.getsockname()[0])"'
        """), timeout=90))
    t.join(5)
    srv.close()
    assert "lease of 10.0.2.15 obtained" in out
    assert "inet 10.0.2.15/24" in out
    assert "default via 10.0.2.2" in out
    assert "reply: hello from the host 10.0.2.15" in out
    assert got and got[0][0] == b"through slirp" and got[0][1][0] == "127.0.0.1"


# ---- vustack and msocket ---------------------------------------------------------

def test_vustack_families_nested_and_msocket(run_umvu, links):
    """-f inet: only inet sockets in the stack; nested vustack combines two
    stacks; msocket from Python (ctypes, syscall -5) makes a socket in a
    stack; defaults are inherited by children and kept across exec."""
    probe = textwrap.dedent("""\
        import socket, sys
        def can_bind(family, addr):
            s = socket.socket(family, socket.SOCK_DGRAM)
            try:
                s.bind((addr, 0)); return "yes"
            except OSError as e:
                return "no"
        print(sys.argv[1], can_bind(socket.AF_INET, "10.66.0.1"),
              can_bind(socket.AF_INET6, "fd66::2"))
        """)
    msock = textwrap.dedent("""\
        import ctypes, socket
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.syscall(-5, b"/dev/net/a", socket.AF_INET, socket.SOCK_DGRAM, 0)
        s = socket.socket(fileno=fd)
        s.bind(("10.66.0.1", 0))
        print("msocket", fd > 2, s.getsockname()[0])
        print("host socket", socket.socket(socket.AF_INET, socket.SOCK_DGRAM).getsockname()[0])
        """)
    out = check(run_umvu(SETUP + textwrap.dedent(f"""\
        vumount -t vunetvdestack null:// /dev/net/a
        vumount -t vunetvdestack null:// /dev/net/b
        vustack /dev/net/a ip addr add 10.66.0.1/24 dev vde0
        vustack /dev/net/b ip addr add fd66::2/64 dev vde0 nodad
        cat > probe.py <<'X'
        {textwrap.indent(probe, '        ').strip()}
        X
        cat > msock.py <<'X'
        {textwrap.indent(msock, '        ').strip()}
        X
        python3 probe.py host
        vustack /dev/net/a python3 probe.py all-a
        vustack -f inet /dev/net/b python3 probe.py inet-b
        vustack -f inet6 /dev/net/b python3 probe.py inet6-b
        vustack /dev/net/a vustack -f inet6 /dev/net/b python3 probe.py nested
        vustack -f inet /dev/net/a ip link | grep -c vde0 || true
        vustack -v -f ip4,10 /dev/net/a true
        vustack /dev/net/a sh -c 'sh -c "python3 probe.py child"'
        python3 msock.py
        """), timeout=90))
    lines = out.splitlines()
    assert "host no no" in lines
    assert "all-a yes no" in lines
    assert "inet-b no no" in lines
    assert "inet6-b no yes" in lines
    assert "nested yes yes" in lines
    assert "child yes no" in lines
    assert "0" in lines                 # -f inet: ip (netlink) sees the host
    assert "msocket True 10.66.0.1" in lines
    assert "host socket 0.0.0.0" in lines


def test_unmount_while_in_use(run_umvu, switch, links):
    """A stack unmounted under a process using it: its new sockets fail
    with ENETDOWN, its old ones with clear errors; nothing hangs."""
    prog = textwrap.dedent("""\
        import errno, os, socket, time
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"before", ("10.77.0.2", 9))
        print("before ok", flush=True)
        open("ready", "w").close()
        while os.path.exists("ready"):
            time.sleep(0.05)
        try:
            socket.socket()
        except OSError as e:
            print("new socket:", errno.errorcode[e.errno], flush=True)
        try:
            u.sendto(b"after", ("10.77.0.2", 9))
            print("old socket: sent", flush=True)
        except OSError as e:
            print("old socket:", errno.errorcode[e.errno], flush=True)
        """)
    start = time.monotonic()
    out = check(run_umvu(SETUP + textwrap.dedent(f"""\
        vumount -t vunetvdestack {switch} /dev/net/n
        vustack /dev/net/n sh -c 'ip addr add 10.77.0.1/24 dev vde0; ip link set vde0 up'
        cat > user.py <<'X'
        {textwrap.indent(prog, '        ').strip()}
        X
        vustack /dev/net/n python3 user.py &
        while [ ! -e ready ]; do sleep 0.05; done
        vuumount /dev/net/n; echo umount=$?
        rm ready
        wait
        vustack /dev/net/n true || echo vustack refused
        echo view goes on
        """), timeout=60))
    assert time.monotonic() - start < 40
    assert "before ok" in out and "umount=0" in out
    assert "new socket: ENETDOWN" in out
    assert re.search(r"old socket: (ENETUNREACH|ENETDOWN|sent)", out)
    assert "vustack refused" in out and "view goes on" in out


def test_helper_survives_traffic_on_a_down_link(run_umvu, switch, links):
    """VUOS's helper died on IPv6 frames reaching a stack whose link is
    down: here it keeps going, and the stack works once the link is up."""
    out = check(run_umvu(SETUP + textwrap.dedent(f"""\
        vumount -t vunetvdestack {switch} /dev/net/quiet
        vumount -t vunetvdestack {switch} /dev/net/loud
        vustack /dev/net/loud sh -c 'ip addr add 10.88.0.2/24 dev vde0; ip link set vde0 up'
        sleep 1
        vustack /dev/net/loud python3 -c '
        import socket
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        idx = socket.if_nametoindex("vde0")
        import time
        sent6, end = 0, time.time() + 4
        while time.time() < end and sent6 < 300:
            u.sendto(b"y" * 200, ("10.88.0.255", 9))
            try:        # IPv6 frames once the link-local address is ready
                s.sendto(b"x" * 200, ("ff02::1", 9, 0, idx))
                sent6 += 1
            except OSError:
                time.sleep(0.05)
        print("flooded", sent6)'
        vustack /dev/net/quiet sh -c 'ip addr add 10.88.0.1/24 dev vde0; ip link set vde0 up'
        vustack /dev/net/quiet busybox ping -c 1 -W 5 10.88.0.2
        """), timeout=60))
    assert "flooded 300" in out and "1 packets received" in out


def test_bad_input(run_umvu, links, tmp_path):
    """Bad URLs, unknown types, vustack on what is not a stack, msocket with
    junk: one clear error each, and the view goes on."""
    junk = textwrap.dedent("""\
        import ctypes, errno, socket
        libc = ctypes.CDLL(None, use_errno=True)
        def ms(*args):
            r = libc.syscall(-5, *args)
            return errno.errorcode.get(ctypes.get_errno(), "?") if r < 0 else "ok"
        print("bad pointer", ms(ctypes.c_void_p(16), 2, 1, 0))
        print("not a stack", ms(b"/etc/passwd", 2, 1, 0))
        print("no such path", ms(b"/nonexistent/x", 2, 1, 0))
        print("bad family", ms(b"/dev/net/null", 4096, 1, 0))
        print("bad type", ms(b"/dev/net/null", 2, 12345, 0))
        print("null stack", ms(b"/dev/net/null", 2, 1, 0))
        print("no default", ms(None, 2, 0, 0))
        """)
    (tmp_path / "junk.py").write_text(junk)
    res = run_umvu(SETUP.replace("set -e; ", "") + textwrap.dedent(f"""\
        vumount -t vunetvdestack bogus:// /dev/net/a; echo "bogus=$?"
        vumount -t vunetvdestack vde:///nonexistent/switch /dev/net/b; echo "noswitch=$?"
        vumount -t vunetfoo none /dev/net/c; echo "type=$?"
        vumount -t vunetnull none /dev/net/null; echo "null=$?"
        vustack /etc/passwd true; echo "notstack=$?"
        vustack /nonexistent true; echo "nopath=$?"
        vustack -f nosuchfamily /dev/net/null true; echo "family=$?"
        vustack /dev/net/null; echo "nocmd=$?"
        python3 {tmp_path}/junk.py
        cat /dev/net/null; echo "open=$?"
        echo view goes on
        """), timeout=60)
    out, err = res.stdout, res.stderr
    assert res.returncode == 0, (out, err)
    for word in ("bogus=", "noswitch=", "type=", "notstack=", "nopath=",
                 "family=", "nocmd=", "open="):
        assert re.search(word + r"[1-9]", out), (word, out)
    assert "null=0" in out
    assert "cannot open the VDE network 'bogus://'" in err
    assert "unknown stack type 'vunetfoo'" in err
    assert "/etc/passwd: not a network stack" in err
    assert "unknown protocol family nosuchfamily" in err
    for line in ("bad pointer EFAULT", "not a stack ENOTSUP",
                 "no such path ENOENT", "bad family EAFNOSUPPORT",
                 "null stack EAFNOSUPPORT", "no default EINVAL"):
        assert line in out, (line, out)
    assert "view goes on" in out


# ---- unprivileged -----------------------------------------------------------------

def test_unprivileged_plumbing(run_umvu, unprivileged, links):
    """As uid 65534: vunetnull and vunetreal, vustack, msocket defaults."""
    out = check(run_umvu(SETUP + textwrap.dedent("""\
        vumount -t vunetnull none /dev/net/none
        vumount -t vunetreal none /dev/net/host
        vustack /dev/net/none python3 -c 'import socket; socket.socket()' 2>&1 | tail -1
        vustack /dev/net/none python3 -c 'import socket; print("unix", int(socket.socket(socket.AF_UNIX).family))'
        vustack /dev/net/none vustack -f inet /dev/net/host python3 -c '
        import socket
        print("inet", int(socket.socket().family))
        try:
            socket.socket(socket.AF_INET6)
        except OSError as e:
            print("inet6", e.errno)'
        id -u
        """), user=NOBODY))
    assert "Address family not supported" in out
    assert "unix 1" in out
    assert "inet 2" in out and "inet6 97" in out
    assert out.rstrip().endswith(str(NOBODY))


@pytest.mark.skipif(not os.path.exists("/dev/net/tun") or not tun_usable_by_nobody(),
                    reason="/dev/net/tun is not readable and writable by others on "
                           "this machine (Debian's default is 0666): an unprivileged "
                           "libvdestack cannot create its tap interface")
def test_unprivileged_vdestack(run_umvu, unprivileged, links):
    """As uid 65534: two stacks on a switch, ip, TCP and ping."""
    d = nobody_dir()
    sw = Switch(NOBODY)
    switch = sw.url
    try:
        (d / "peer.py").write_text(PEER.read_text())
        out = check(run_umvu(SETUP + textwrap.dedent(f"""\
            vumount -t vunetvdestack {switch} /dev/net/a
            vumount -t vunetvdestack {switch} /dev/net/b
            vustack /dev/net/a sh -c 'ip addr add 10.99.0.1/24 dev vde0; ip link set vde0 up'
            vustack /dev/net/b sh -c 'ip addr add 10.99.0.2/24 dev vde0; ip link set vde0 up'
            vustack /dev/net/a python3 {d}/peer.py 10.99.0.1 10.99.0.2 &
            vustack /dev/net/b python3 {d}/peer.py 10.99.0.2 10.99.0.1
            wait
            """), user=NOBODY, timeout=90))
        assert "tcp tcp from 10.99.0.2 peer 10.99.0.1" in out
        assert "icmp reply 0 from 10.99.0.1" in out
    finally:
        sw.close()
        shutil.rmtree(d, ignore_errors=True)


# ---- the per-byte path never stops ---------------------------------------------------

def stops(report: str) -> int:
    """Calls that reached Python plus those the C core resumed alone."""
    python = int(re.search(r"trace summary: (\d+) calls", report).group(1))
    c = re.search(r"and (\d+) were decided in C", report)
    return python + (int(c.group(1)) if c else 0)


def transfer_stops(run_umvu, switch, tmp_path, megabytes: float) -> tuple[int, str]:
    log = tmp_path / f"trace-{megabytes}.log"
    out = check(run_umvu(SETUP + textwrap.dedent(f"""\
        vumount -t vunetvdestack {switch} /dev/net/a
        vumount -t vunetvdestack {switch} /dev/net/b
        vustack /dev/net/a sh -c 'ip addr add 10.44.0.1/24 dev vde0; ip link set vde0 up'
        vustack /dev/net/b sh -c 'ip addr add 10.44.0.2/24 dev vde0; ip link set vde0 up'
        vustack /dev/net/a python3 {XFER} recv 10.44.0.1 7100 &
        vustack /dev/net/b python3 {XFER} send 10.44.0.1 7100 {megabytes}
        wait
        """), opts=("-N", "--trace=summary", "-o", str(log)), timeout=120))
    return stops(log.read_text()), out


def test_transfer_does_not_stop(run_umvu, switch, tmp_path, links):
    """100 MB between two stacks: at most 100 tracer stops more than the
    same session moving 1 byte."""
    base, _ = transfer_stops(run_umvu, switch, tmp_path, 1 / (1 << 20))
    full, out = transfer_stops(run_umvu, switch, tmp_path, 100)
    assert f"received {100 << 20}" in out
    assert full - base <= 100, (base, full)
