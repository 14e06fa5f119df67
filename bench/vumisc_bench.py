#!/usr/bin/env python3
"""The cost of the time view (vumisc's vumisctime).

    .venv/bin/python bench/vumisc_bench.py [--calls N] [--runs R]

A small C program calls clock_gettime(CLOCK_REALTIME) N times through
glibc (so through the vDSO, when there is one to use) and prints the
nanoseconds per call. It runs:

  native                   no umvu
  umvu, vumisc loaded      the vDSO untouched: no syscall, no stop
  umvu, in a time view     every call a real syscall, a seccomp stop and an
                           answer from Python (expected: tens of us)
  umvu, after vuumount     the vDSO put back: native again
  host, during a time view a process outside the view, while a time view
                           runs beside it: untouched

The median of R runs of each is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"

PROG = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    struct timespec ts, a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        clock_gettime(CLOCK_REALTIME, &ts);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""


def build(tmp: Path) -> Path:
    src, exe = tmp / "cg.c", tmp / "cg"
    src.write_text(PROG)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def umvu(script: str, env: dict) -> list[float]:
    res = subprocess.run([str(VENV_BIN / "umvu"), "-N", "--", "bash", "-c", script],
                         env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        sys.exit(f"umvu failed: {res.stderr}")
    return [float(x) for x in res.stdout.split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200000, help="vDSO-speed calls per run")
    ap.add_argument("--slow-calls", type=int, default=2000, help="calls per run in a time view")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    results: dict[str, list[float]] = {k: [] for k in (
        "native", "umvu, vumisc loaded", "umvu, in a time view", "umvu, after vuumount",
        "host, during a time view")}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        n, slow = args.calls, args.slow_calls
        for _ in range(args.runs):
            out = subprocess.run([str(exe), str(n)], capture_output=True, text=True)
            results["native"].append(float(out.stdout))
            script = (f"vu_insmod vumisc && {exe} {n} && "
                      f"vumount -t vumisctime none /mnt && echo 2 > /mnt/frequency && "
                      f"{exe} {slow} && touch {tmp}/go && sleep 1 && "
                      f"vuumount /mnt && {exe} {n}")
            proc = subprocess.Popen([str(VENV_BIN / "umvu"), "-N", "--", "bash", "-c", script],
                                    env=env, stdout=subprocess.PIPE, text=True)
            go = Path(tmp) / "go"
            while not go.exists() and proc.poll() is None:
                time.sleep(0.01)
            host = subprocess.run([str(exe), str(n)], capture_output=True, text=True)
            out, _ = proc.communicate(timeout=600)
            go.unlink(missing_ok=True)
            loaded, viewed, after = (float(x) for x in out.split())
            results["umvu, vumisc loaded"].append(loaded)
            results["umvu, in a time view"].append(viewed)
            results["umvu, after vuumount"].append(after)
            results["host, during a time view"].append(float(host.stdout))
    native = statistics.median(results["native"])
    print(f"clock_gettime(CLOCK_REALTIME), median of {args.runs} runs")
    print(f"{'where':28} {'ns/call':>10} {'x native':>10}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:28} {med:10.1f} {med / native:10.1f}")


if __name__ == "__main__":
    main()
