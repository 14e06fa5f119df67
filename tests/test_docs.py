"""The docs that are generated stay true: the tutorials' transcripts are
run again (docs/make_tutorials.py) and compared with docs/tutorials/, and
the man pages and bash completion (python -m umvu.manpages) with
docs/man/ and docs/completion/."""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import pytest

from conftest import REPO, VENV_BIN

TUTORIALS = REPO / "docs" / "tutorials"


def _same(expected_dir, got_dir, names):
    problems = []
    for name in names:
        want = (expected_dir / name).read_text() if (expected_dir / name).exists() else ""
        got = (got_dir / name).read_text()
        if want != got:
            diff = "".join(difflib.unified_diff(
                want.splitlines(True), got.splitlines(True),
                f"committed {name}", f"regenerated {name}"))
            problems.append(diff)
    return problems


def test_tutorials_are_what_umvu_prints(tmp_path, unprivileged):
    out = tmp_path / "tutorials"
    res = subprocess.run([str(VENV_BIN / "python"), str(REPO / "docs" / "make_tutorials.py"),
                          f"{out}/"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in out.glob("*.md"))
    assert names == sorted(p.name for p in TUTORIALS.glob("*.md"))
    problems = _same(TUTORIALS, out, names)
    assert not problems, ("a tutorial is stale: run `.venv/bin/python "
                          "docs/make_tutorials.py` and review the diff\n"
                          + "\n".join(problems))


def test_tutorials_show_no_failure():
    """No transcript shows umvu failing, nor a command it could not find."""
    for path in TUTORIALS.glob("*.md"):
        text = path.read_text()
        assert "Traceback" not in text, path
        assert "command not found" not in text, path
        assert "umvu: " not in text.replace("$ umvu ", ""), path


def test_man_pages_and_completion_are_current(tmp_path):
    res = subprocess.run([str(VENV_BIN / "python"), "-m", "umvu.manpages", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    for sub in ("man", "completion"):
        names = sorted(os.listdir(tmp_path / sub))
        assert names == sorted(os.listdir(REPO / "docs" / sub)), sub
        problems = _same(REPO / "docs" / sub, tmp_path / sub, names)
        assert not problems, ("run `.venv/bin/python -m umvu.manpages`\n"
                              + "\n".join(problems))


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "docs" / "man").glob("*.1")))
def test_man_pages_render(page):
    res = subprocess.run(["man", "-l", "-Tutf8", str(REPO / "docs" / "man" / page)],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
    if res.returncode != 0 and "not found" in res.stderr:
        pytest.fail("man (man-db) is needed to check the pages")
    text = re.sub(".\x08", "", res.stdout)       # no overstriking
    assert res.returncode == 0 and not res.stderr, res.stderr
    assert "OPTIONS" in text and "--help" in text.replace("\u2010", "-")


def test_every_command_has_help_and_version():
    for name in ("umvu", "vu_insmod", "vu_rmmod", "vu_lsmod", "vumount", "vuumount",
                 "vuname", "vusu"):
        for flag in ("--help", "--version"):
            res = subprocess.run([str(VENV_BIN / name), flag], capture_output=True,
                                 text=True, timeout=30)
            assert res.returncode == 0 and res.stdout and not res.stderr, (name, flag)


def test_bash_completion(tmp_path):
    script = f"""
source {REPO}/docs/completion/vu_insmod
COMP_WORDS=(vu_insmod vuf); COMP_CWORD=1; _vu_insmod; echo "${{COMPREPLY[*]}}"
COMP_WORDS=(vumount -t vudev); COMP_CWORD=2; _vumount; echo "${{COMPREPLY[*]}}"
COMP_WORDS=(umvu --ti); COMP_CWORD=1; _umvu; echo "${{COMPREPLY[*]}}"
"""
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         timeout=30, env={"HOME": str(tmp_path), "PATH": os.defpath})
    assert res.stdout.splitlines() == [
        "vufs vufuse", "vudevloop vudevnull vudevpartx vudevramdisk", "--time-scale"]
