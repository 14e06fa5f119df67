#!/usr/bin/env python3
"""docs/images/umvu-xterm.png: `umvu xterm` on a private Xvfb display.

    .venv/bin/python docs/make_screenshot.py

Xvfb keeps its screen in a file (-fbdir, XWD format); the screenshot is
that file, read once the xterm in the view has printed what it shows, and
written as PNG with Pillow. Not compared by the tests (fonts differ from
machine to machine); tests/test_gui.py checks that xterm runs in a view.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "images" / "umvu-xterm.png"
SCRIPT = ("printf '$ id\\n'; id; printf '$ hostname\\n'; hostname; "
          "printf '$ vu_lsmod\\n'; vu_lsmod; printf '$ umvu --dump\\n'; umvu --dump; "
          "touch /tmp/umvu-shot-ready; sleep 30")


def xwd_to_png(data: bytes, out: Path) -> None:
    """An XWD file of a 24/32-bit TrueColor ZPixmap, as Xvfb writes it."""
    from PIL import Image
    fields = struct.unpack(">25I", data[:100])
    header_size, _, _, depth, width, height = fields[:6]
    byte_order, bpp, bytes_per_line = fields[7], fields[11], fields[12]
    ncolors = fields[19]
    pixels = header_size + ncolors * 12
    mode = "BGRX" if byte_order == 0 else "XRGB"
    img = Image.frombuffer("RGB", (width, height), data[pixels:pixels + bytes_per_line * height],
                           "raw", mode, bytes_per_line, 1)
    assert bpp == 32 and depth == 24, (bpp, depth)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)


def main() -> int:
    for tool in ("Xvfb", "xterm"):
        if shutil.which(tool) is None:
            print(f"make_screenshot: {tool} is needed", file=sys.stderr)
            return 1
    fbdir = Path(tempfile.mkdtemp(prefix="umvu-shot-"))
    display = next(n for n in range(90, 200) if not os.path.exists(f"/tmp/.X11-unix/X{n}"))
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-nolisten", "tcp", "-screen", "0",
                             "660x260x24", "-fbdir", str(fbdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ready = Path("/tmp/umvu-shot-ready")
    ready.unlink(missing_ok=True)
    env = dict(os.environ, DISPLAY=f":{display}", HOME="/tmp",
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    view = None
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(f"/tmp/.X11-unix/X{display}"):
            if time.monotonic() > deadline:
                raise RuntimeError("Xvfb did not start")
            time.sleep(0.05)
        # as a user would run it: unprivileged (uid 65534 when run as root)
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] \
            if os.geteuid() == 0 else []
        view = subprocess.Popen(
            [*user, "umvu", "-N", "--root", "--hostname", "box", "--", "xterm",
             "-geometry", "80x14+0+0", "-fa", "Monospace", "-fs", "10",
             "-bg", "white", "-fg", "black", "-title", "umvu xterm",
             "-e", "sh", "-c", SCRIPT],
            env=env, cwd="/tmp", start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline or view.poll() is not None:
                raise RuntimeError("the xterm in the view did not show its output")
            time.sleep(0.1)
        time.sleep(1.0)                 # let xterm draw
        xwd_to_png((fbdir / "Xvfb_screen0").read_bytes(), OUT)
        print(OUT)
        return 0
    finally:
        for proc in (view, xvfb):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        ready.unlink(missing_ok=True)
        shutil.rmtree(fbdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
