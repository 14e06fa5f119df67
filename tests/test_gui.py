"""An X11 program in a view: xterm on a private Xvfb display."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import NOBODY


def free_display() -> int:
    for n in range(73, 200):
        if not (os.path.exists(f"/tmp/.X11-unix/X{n}") or os.path.exists(f"/tmp/.X{n}-lock")):
            return n
    pytest.fail("no free X display number")


@pytest.fixture(scope="module")
def display():
    for tool in ("Xvfb", "xterm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: `make deps` installs it")
    n = free_display()
    xvfb = subprocess.Popen(["Xvfb", f":{n}", "-nolisten", "tcp", "-screen", "0",
                             "800x600x24"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    sock = f"/tmp/.X11-unix/X{n}"
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if xvfb.poll() is not None or time.monotonic() > deadline:
            xvfb.kill()
            pytest.fail(f"Xvfb :{n} did not start: {xvfb.communicate()[1]!r}")
        time.sleep(0.05)
    yield f":{n}"
    xvfb.send_signal(signal.SIGTERM)
    try:
        xvfb.wait(timeout=10)
    except subprocess.TimeoutExpired:
        xvfb.kill()
        xvfb.wait()


def test_xterm_runs_a_command(run_umvu, display, tmp_path):
    out = tmp_path / "id.out"
    res = run_umvu(["xterm", "-e", "sh", "-c", f"id > {out}; vu_lsmod >> {out}"],
                   opts=("-N", "-V", "gui"), extra_env={"DISPLAY": display})
    assert res.returncode == 0, res.stderr
    native_id = subprocess.run(["id"], capture_output=True, text=True).stdout
    assert out.read_text() == native_id


def test_xterm_as_nobody_with_virtual_root(run_umvu, display, unprivileged):
    out = run_umvu.home(NOBODY) / "id.out"
    res = run_umvu(["xterm", "-e", "sh", "-c",
                    f"vu_insmod unrealuidgid && vusu -c id > {out}; id -u >> {out}"],
                   user=NOBODY, extra_env={"DISPLAY": display})
    assert res.returncode == 0, res.stderr
    assert out.read_text() == f"uid=0(root) gid=0(root) groups=0(root)\n{NOBODY}\n"
    assert os.stat(out).st_uid == NOBODY
