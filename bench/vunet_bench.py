"""vunet bench: TCP throughput and connect latency, in one run,

  - between two stacks on a VDE switch (vunetvdestack vde://, in umvu),
  - from a stack through slirp (vunetpicox slirp://) to a server on the
    host's loopback,
  - on the host's loopback, natively (no umvu),

and the tracer stops a 100 MB transfer between two stacks costs (a session
moving 100 MB against the same session moving 1 byte, --trace=summary).

    .venv/bin/python bench/vunet_bench.py [--mb 200] [--connects 200]

Inside the views the same program runs as client and server
(`vunet_bench.py server ADDR PORT`, `client ADDR PORT MB CONNECTS`)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
ME = Path(__file__).resolve()
XFER = REPO / "tests" / "data" / "vunet_xfer.py"


# ---- the programs that run inside the stacks ----------------------------------
def server(addr: str, port: int) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(128)
    print("listening", flush=True)
    buf = bytearray(1 << 18)
    while True:
        conn, _ = srv.accept()
        with conn:
            while conn.recv_into(buf):
                pass
            conn.sendall(b"k")


def client(addr: str, port: int, mb: float, connects: int) -> None:
    deadline = time.time() + 20
    while True:                         # the server may not be up yet
        try:
            socket.create_connection((addr, port), timeout=5).close()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    lat = []
    for _ in range(connects):
        t0 = time.perf_counter()
        c = socket.create_connection((addr, port))
        lat.append(time.perf_counter() - t0)
        c.close()
    lat.sort()
    size = int(mb * (1 << 20))
    chunk = b"x" * (1 << 18)
    c = socket.create_connection((addr, port))
    t0 = time.perf_counter()
    sent = 0
    while sent < size:
        c.sendall(chunk)
        sent += len(chunk)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)                           # the server has read everything
    secs = time.perf_counter() - t0
    c.close()
    print(f"RESULT connect_us_median={lat[len(lat) // 2] * 1e6:.0f} "
          f"connect_us_p90={lat[int(len(lat) * 0.9)] * 1e6:.0f} "
          f"throughput_MBps={sent / secs / (1 << 20):.1f}", flush=True)


# ---- the runs -------------------------------------------------------------------
def umvu(script: str, opts=(), timeout=300) -> str:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    res = subprocess.run([str(BIN / "umvu"), "-N", *opts, "--", "bash", "-c", script],
                         env=env, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"umvu failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def result(out: str) -> dict[str, float]:
    m = re.search(r"RESULT (.*)", out)
    if not m:
        raise RuntimeError(out)
    return {k: float(v) for k, v in (w.split("=") for w in m.group(1).split())}


class Switch:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="umvu-vde-bench-"))
        self.path = self.dir / "sw"
        self.proc = subprocess.Popen(["vde_plug", f"switch://{self.path}", "null://"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.path.exists():
                break
            time.sleep(0.05)
        self.url = f"vde://{self.path}"

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def two_stacks(url: str, body: str) -> str:
    return f"""set -e
vu_insmod vunet
vumount -t vunetvdestack {url} /dev/net/a
vumount -t vunetvdestack {url} /dev/net/b
vustack /dev/net/a sh -c 'ip addr add 10.42.0.1/24 dev vde0; ip link set vde0 up'
vustack /dev/net/b sh -c 'ip addr add 10.42.0.2/24 dev vde0; ip link set vde0 up'
{body}
"""


def run_switch(url: str, mb: float, connects: int) -> dict:
    out = umvu(two_stacks(url, f"""
vustack /dev/net/a python3 {ME} server 10.42.0.1 7200 &
vustack /dev/net/b python3 {ME} client 10.42.0.1 7200 {mb} {connects}
kill %1
"""))
    return result(out)


def run_slirp(mb: float, connects: int) -> dict:
    s = socket.socket()                 # a free port of the host's loopback
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = subprocess.Popen([sys.executable, str(ME), "server", "127.0.0.1", str(port)],
                           stdout=subprocess.PIPE, text=True)
    srv.stdout.readline()
    try:
        out = umvu(f"""set -e
vu_insmod vunet
vumount -t vunetpicox slirp:// /dev/net/s
vustack /dev/net/s sh -c 'ip addr add 10.0.2.15/24 dev vde0; ip link set vde0 up; ip route add default via 10.0.2.2'
vustack /dev/net/s python3 {ME} client 10.0.2.2 {port} {mb} {connects}
""")
    finally:
        srv.kill()
        srv.wait()
    return result(out)


def run_loopback(mb: float, connects: int) -> dict:
    srv = subprocess.Popen([sys.executable, str(ME), "server", "127.0.0.1", "7201"],
                           stdout=subprocess.PIPE, text=True)
    srv.stdout.readline()
    try:
        out = subprocess.run([sys.executable, str(ME), "client", "127.0.0.1", "7201",
                              str(mb), str(connects)], capture_output=True, text=True,
                             timeout=300).stdout
    finally:
        srv.kill()
        srv.wait()
    return result(out)


def stops_of(url: str, mb: float, log: Path) -> int:
    umvu(two_stacks(url, f"""
vustack /dev/net/a python3 {XFER} recv 10.42.0.1 7300 &
vustack /dev/net/b python3 {XFER} send 10.42.0.1 7300 {mb}
wait
"""), opts=("--trace=summary", "-o", str(log)))
    text = log.read_text()
    python = int(re.search(r"trace summary: (\d+) calls", text).group(1))
    c = re.search(r"and (\d+) were decided in C", text)
    return python + (int(c.group(1)) if c else 0)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=200, help="megabytes per throughput run")
    p.add_argument("--connects", type=int, default=200, help="connects timed per run")
    args = p.parse_args()
    sw = Switch()
    try:
        rows = [("loopback (host, native)", run_loopback(args.mb, args.connects)),
                ("two stacks on a VDE switch", run_switch(sw.url, args.mb, args.connects)),
                ("stack -> slirp -> host loopback", run_slirp(args.mb, args.connects))]
        with tempfile.TemporaryDirectory() as d:
            base = stops_of(sw.url, 1 / (1 << 20), Path(d) / "base.log")
            full = stops_of(sw.url, 100, Path(d) / "full.log")
    finally:
        sw.close()
    print(f"{'path':34} {'MB/s':>8} {'connect us (median)':>20} {'p90':>6}")
    for name, r in rows:
        print(f"{name:34} {r['throughput_MBps']:8.1f} {r['connect_us_median']:20.0f} "
              f"{r['connect_us_p90']:6.0f}")
    print(f"tracer stops of a 100 MB transfer between two stacks: {full - base} "
          f"(session {full}, the same session moving 1 byte {base})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
