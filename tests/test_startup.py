"""Start-up shortcuts keep umvu's behaviour: `umvu CMD` parsed without
argparse gives what argparse gives, the quick `which` finds what
shutil.which finds, the lazy loggers show what logging shows, and the
quick launcher (umvu.launcher) exits as the plain console script does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, VENV_BIN

from umvu import cli, logs


@pytest.mark.parametrize("argv", [["true", "-x"], ["-N", "true"], ["--", "true"],
                                  ["-N", "--", "sh", "-c", "x"], ["--norc", "-N", "a"]])
def test_plain_args_are_the_parsers(argv):
    parsed = vars(cli.build_parser().parse_args(cli._trace_words(cli.build_parser(), argv)))
    if parsed["command"][:1] == ["--"]:
        parsed["command"] = parsed["command"][1:]       # as main() drops it
    plain = vars(cli._plain_args(argv))
    assert plain == parsed


@pytest.mark.parametrize("argv", [[], ["-N"], ["--"], ["-N", "--"], ["--trace"],
                                  ["-N", "-V", "x", "true"], ["--", "-x"]])
def test_options_go_to_argparse(argv):
    assert cli._plain_args(argv) is None


def test_which_as_shutil(tmp_path):
    (tmp_path / "plain").write_text("")
    (tmp_path / "runs").write_text("")
    (tmp_path / "runs").chmod(0o755)
    (tmp_path / "adir").mkdir()
    path = f"{tmp_path}:/usr/bin:/bin"
    for name in ("sh", "runs", "plain", "adir", "nosuch", "/bin/sh",
                 str(tmp_path / "plain"), str(tmp_path / "runs"), "./runs"):
        assert cli._which(name, path) == shutil.which(name, path=path), name
    assert cli._which("sh", "") == shutil.which("sh", path="")


def test_lazy_logger_reaches_logging(caplog):
    import logging
    log = logs.getLogger("umvu.test-startup")
    with caplog.at_level(logging.DEBUG, logger="umvu.test-startup"):
        log.debug("dbg %d", 1)
        log.warning("warn %s", "x")
        assert log.isEnabledFor(logging.DEBUG)
    assert [r.getMessage() for r in caplog.records] == ["dbg 1", "warn x"]


def test_lazy_logging_not_imported_by_plain_start():
    code = ("import sys; from umvu import cli, view, tracer; "
            "print(sorted(m for m in ('logging', 'argparse', 'shutil', 'tempfile', "
            "'traceback', 'inspect', 'concurrent.futures') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True,
                         text=True, cwd=REPO, check=True,
                         env={**os.environ, "PYTHONPATH": f"{REPO}:{_site()}"})
    assert out.stdout.strip() == "[]", out.stdout


def _site():
    import sysconfig
    return sysconfig.get_paths()["purelib"]


def _launcher():
    path = VENV_BIN / "umvu"
    text = path.read_text()
    if "umvu.launcher" not in text:
        pytest.fail("the venv has pip's console scripts: `make venv` installs "
                    "the launchers")
    return path


@pytest.mark.parametrize("argv,status", [
    (["true"], 0), (["false"], 1), (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "kill -TERM $$"], 128 + 15), (["/no/such/cmd"], 127),
    (["-d", "nosuchtag", "true"], 2)])
def test_launcher_exit_status(argv, status):
    umvu = _launcher()
    res = subprocess.run([str(umvu), *argv], capture_output=True, text=True, timeout=60)
    assert res.returncode == status, res.stderr


def test_launcher_flushes_output(tmp_path):
    umvu = _launcher()
    res = subprocess.run([str(umvu), "--version"], capture_output=True, text=True)
    assert res.stdout == "umvu 0.1.0\n"
    log = tmp_path / "log"
    res = subprocess.run([str(umvu), "-N", "-o", str(log), "--trace=summary", "--",
                          "sh", "-c", "echo out; echo err >&2"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "out\n" and res.stderr == "err\n"
    assert log.read_text().strip(), "summary lost at exit"


def test_launcher_helpers_and_modules():
    umvu = _launcher()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    res = subprocess.run([str(umvu), "-N", "sh", "-c", "vu_insmod vufs && vu_lsmod"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("vufs:")
