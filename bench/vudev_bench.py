#!/usr/bin/env python3
"""vudev throughput: `dd bs=1M` read and write of a 256 MiB vudev ramdisk and
of a 256 MiB partition of an image (vudevpartx), against the same on plain
files, all in one umvu session (the plain-file runs too, so they pay the
same tracing the view costs a process that touches nothing virtual).

    .venv/bin/python bench/vudev_bench.py [--size MiB] [--runs N]

The ramdisk is compared with a plain file in /dev/shm (memory), the
partition with a plain file beside the image (the same file system). dd's
own timing is used (its last stderr line); the best of N runs is kept.
Prints MB/s and the ratios device/plain (the issue's target: >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DD_LINE = re.compile(r"^(\d+) bytes .* copied, ([0-9.e-]+) s,")


def session_script(size: int, runs: int, work: Path) -> str:
    dd = []
    for case, dev in (("ramdisk", "/dev/ramdisk"), ("shmfile", f"{work}/shm/plain"),
                      ("partition", "/dev/sdx1"), ("diskfile", f"{work}/plain")):
        for _ in range(runs):
            dd.append(f"echo '== {case} write'; dd if=/dev/zero of={dev} bs=1M "
                      f"count={size} conv=notrunc 2>&1 | tail -1")
            dd.append(f"echo '== {case} read'; dd if={dev} of=/dev/null bs=1M "
                      f"count={size} 2>&1 | tail -1")
    return "\n".join([
        "set -e",
        "vu_insmod vudev",
        f"vumount -t vudevramdisk -o size={size}M none /dev/ramdisk",
        f"vumount -t vudevpartx {work}/disk.img /dev/sdx",
        "set +e",
        *dd,
    ])


def parse(out: str) -> dict:
    best: dict = {}
    key = None
    for line in out.splitlines():
        if line.startswith("== "):
            key = line[3:].strip()
            continue
        m = DD_LINE.match(line)
        if key and m:
            rate = int(m.group(1)) / float(m.group(2)) / 1e6
            best[key] = max(best.get(key, 0.0), rate)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="MiB (default 256)")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    size = args.size
    work = Path(tempfile.mkdtemp(prefix="vudev-bench-", dir="/var/tmp"))
    shm = Path(tempfile.mkdtemp(prefix="vudev-bench-", dir="/dev/shm"))
    try:
        (work / "shm").symlink_to(shm)
        for plain in (work / "plain", shm / "plain"):
            with open(plain, "wb") as f:
                f.truncate(size << 20)
        disk = work / "disk.img"
        with open(disk, "wb") as f:
            f.truncate((size + 2) << 20)
        subprocess.run(["sfdisk", "-q", str(disk)], check=True, text=True,
                       input=f"label: dos\nstart=2048, size={size * 2048}, type=83\n",
                       env=dict(os.environ, PATH=SBIN))
        env = dict(os.environ, PATH=f"{VENV_BIN}:{SBIN}", LC_ALL="C")
        res = subprocess.run([str(VENV_BIN / "umvu"), "-N", "--", "bash", "-c",
                              session_script(size, args.runs, work)],
                             env=env, capture_output=True, text=True, timeout=1800)
        if res.returncode != 0:
            print(res.stdout, res.stderr, file=sys.stderr)
            return 1
        best = parse(res.stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    print(f"dd bs=1M, {size} MiB, best of {args.runs}, MB/s (one umvu session)")
    print(f"{'':10} {'device':>10} {'plain file':>12} {'ratio':>7}")
    for dev, plain, label in (("ramdisk", "shmfile", "ramdisk"),
                              ("partition", "diskfile", "partition")):
        for op in ("write", "read"):
            d, f = best.get(f"{dev} {op}"), best.get(f"{plain} {op}")
            if d is None or f is None:
                print(f"{label} {op}: no result", file=sys.stderr)
                continue
            print(f"{label + ' ' + op:16} {d:10.0f} {f:12.0f} {d / f:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
