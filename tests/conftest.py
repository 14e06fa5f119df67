"""Fixtures for the tests that run a real umvu on real programs.

`run_umvu(script_or_argv, user=None, input=None, timeout=60, ...)` starts
`.venv/bin/umvu -N` (no rc files) on a bash script (a str) or an argv (a list)
and returns the CompletedProcess (text stdout/stderr). user=NOBODY runs it as
uid/gid 65534 through setpriv. A hang fails the test (after killing the whole
process group) instead of blocking the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
NOBODY = 65534
USERS = [None, NOBODY]          # for @pytest.mark.parametrize("user", USERS, ids=...)
USER_IDS = ["root", "nobody"]


def _require_venv() -> Path:
    umvu = VENV_BIN / "umvu"
    if not os.access(umvu, os.X_OK):
        pytest.fail(f"{umvu} missing: run `make -C {REPO} venv` first")
    return umvu


@pytest.fixture(scope="session")
def umvu_bin() -> Path:
    return _require_venv()


@pytest.fixture(scope="session")
def env() -> dict:
    """The environment of every umvu run: .venv/bin first in PATH, no
    leftovers of an enclosing view, a fixed locale so outputs compare."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("UMVU_", "PYTEST_", "PYTHON"))}
    e["PATH"] = f"{VENV_BIN}:{e.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
    e["LC_ALL"] = "C"
    e.pop("DISPLAY", None)
    return e


def _make_traversable(path: Path) -> None:
    """Let uid 65534 reach the repository and its venv.

    CI clones the repository into a place we do not know in advance (often
    under /root, mode 0700), yet uid 65534 must walk down to .venv/bin/umvu
    and import the umvu package from the working tree (an editable install).
    We are root there: add o+rx to every component of the path that lacks it.
    Files inside a git checkout and a venv are already world-readable.
    """
    for p in [path, *path.parents]:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        want = stat.S_IROTH | stat.S_IXOTH
        if mode & want != want:
            if os.geteuid() != 0:
                pytest.fail(f"{p} is not traversable by uid {NOBODY} and we "
                            "are not root to fix it")
            os.chmod(p, mode | want)


@pytest.fixture(scope="session")
def unprivileged(umvu_bin, env) -> int:
    """Make sure uid/gid 65534 can run umvu; returns the uid."""
    if os.geteuid() != 0:
        pytest.fail("the unprivileged tests switch to uid 65534: run them as root")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed")
    for d in (VENV_BIN, REPO / "umvu", REPO / "modules"):
        _make_traversable(d)
    probe = subprocess.run(_setpriv() + [str(umvu_bin), "-N", "--", "id", "-u"],
                           env=dict(env, HOME="/"), cwd="/", capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (probe.returncode, probe.stdout) == (0, f"{NOBODY}\n"), \
        f"umvu cannot run as {NOBODY}: {probe.stderr}"
    return NOBODY


def _setpriv() -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def _is_nobody(user) -> bool:
    if user in (None, 0, "root"):
        return False
    if user in (NOBODY, "nobody"):
        return True
    raise ValueError(f"unknown user {user!r}")


def nobody_dir(prefix: str = "umvu-nobody-") -> Path:
    """A fresh directory under /tmp owned by 65534 (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chown(d, NOBODY, NOBODY)
    d.chmod(0o755)
    return d


class UmvuRunner:
    """What the run_umvu fixture returns: callable, plus helpers."""

    def __init__(self, umvu_bin: Path, env: dict, request, tmp_path: Path):
        self.umvu_bin = umvu_bin
        self.base_env = env
        self._request = request
        self._tmp_path = tmp_path
        self._homes: dict[bool, Path] = {}

    def home(self, user=None) -> Path:
        """$HOME of the runs as `user`: a fresh directory of this test."""
        nobody = _is_nobody(user)
        if nobody not in self._homes:
            if nobody:
                self._request.getfixturevalue("unprivileged")
                home = nobody_dir("umvu-home-")
                self._request.addfinalizer(lambda: shutil.rmtree(home, True))
            else:
                home = self._tmp_path / "home"
                home.mkdir(exist_ok=True)
            self._homes[nobody] = home
        return self._homes[nobody]

    def command(self, script_or_argv, *, user=None, opts=("-N",),
                extra_env: dict | None = None) -> tuple[list[str], dict]:
        """argv and environment of one umvu run."""
        if isinstance(script_or_argv, str):
            cmd = ["bash", "-c", script_or_argv]
        else:
            cmd = [str(a) for a in script_or_argv]
        argv = [str(self.umvu_bin), *opts, "--", *cmd]
        env = dict(self.base_env, HOME=str(self.home(user)))
        if _is_nobody(user):
            argv = _setpriv() + argv
            env.update(USER="nobody", LOGNAME="nobody")
        else:
            env.update(USER="root", LOGNAME="root")
        env.update(extra_env or {})
        return argv, env

    def popen(self, script_or_argv, *, user=None, opts=("-N",),
              extra_env=None, cwd=None, **kw) -> subprocess.Popen:
        argv, env = self.command(script_or_argv, user=user, opts=opts,
                                 extra_env=extra_env)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("stdin", subprocess.DEVNULL)
        if cwd is None:
            cwd = self.home(user)
        proc = subprocess.Popen(argv, env=env, cwd=cwd, text=True,
                                start_new_session=True, **kw)
        self._request.addfinalizer(lambda: _kill_group(proc))
        return proc

    def __call__(self, script_or_argv, *, user=None, input=None, timeout=60,
                 opts=("-N",), extra_env=None, cwd=None) -> subprocess.CompletedProcess:
        proc = self.popen(script_or_argv, user=user, opts=opts, extra_env=extra_env,
                          cwd=cwd, stdin=subprocess.PIPE if input is not None
                          else subprocess.DEVNULL)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            pytest.fail(f"umvu hung for {timeout}s: {proc.args}\n"
                        f"stdout: {out}\nstderr: {err}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill umvu and whatever it left behind (its session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.fixture
def run_umvu(umvu_bin, env, request, tmp_path) -> UmvuRunner:
    return UmvuRunner(umvu_bin, env, request, tmp_path)


@pytest.fixture(params=USERS, ids=USER_IDS)
def user(request):
    """Run a test as root and again as the unprivileged uid 65534."""
    if request.param is not None:
        request.getfixturevalue("unprivileged")
    return request.param


@pytest.fixture
def workdir(user, tmp_path) -> Path:
    """A scratch directory the current `user` can write."""
    if user is None:
        yield tmp_path
        return
    d = nobody_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def native(script: str, env: dict, cwd=None, timeout=60) -> subprocess.CompletedProcess:
    """The same bash script run without umvu, for comparisons."""
    return subprocess.run(["bash", "-c", script], env=env, cwd=cwd, text=True,
                          capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def run_native(env):
    return lambda script, **kw: native(script, env, **kw)

