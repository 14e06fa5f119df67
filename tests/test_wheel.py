"""What users install is what is tested: a wheel built from the tree,
installed into a fresh venv outside it, holds every built-in module.

An editable install hid a missing package once (vufuse was not in the
hand-written package list): this builds the wheel, installs it in a venv
of its own, and from a directory outside the tree loads every module in
modules/ and mounts a vufs bind and a vufuse image.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

BUILTIN = sorted(
    name[:-3] if name.endswith(".py") else name
    for name in os.listdir(REPO / "modules")
    if not name.startswith(("_", ".")) and (
        name.endswith(".py") or (REPO / "modules" / name / "__init__.py").exists()))


def _run(argv, **kw):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)
    assert res.returncode == 0, f"{argv}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    top = tmp_path_factory.mktemp("wheel")
    python = REPO / ".venv" / "bin" / "python"
    _run([str(python), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(top / "dist"), str(REPO)], cwd=top)
    wheels = list((top / "dist").glob("umvu-*.whl"))
    assert len(wheels) == 1, wheels
    venv = top / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    # the dependencies as the project's venv has them (no index needed),
    # then the wheel itself
    deps = _run([str(python), "-m", "pip", "freeze", "--exclude-editable"]).stdout
    wanted = [line for line in deps.splitlines() if line.split("==")[0].lower() in
              ("cffi", "pycparser", "python-ptrace", "pyseccomp", "fusepy", "lark")]
    _run([str(venv / "bin" / "pip"), "download", "-q", "-d", str(top / "deps"),
          *wanted], cwd=top)
    _run([str(venv / "bin" / "pip"), "install", "-q", "--no-index",
          "--find-links", str(top / "deps"), str(wheels[0])], cwd=top)
    return top, wheels[0], venv


def test_wheel_holds_every_builtin_module(wheel_venv):
    _, wheel, _ = wheel_venv
    names = zipfile.ZipFile(wheel).namelist()
    for module in BUILTIN:
        assert (f"umvu/modules/{module}.py" in names or
                f"umvu/modules/{module}/__init__.py" in names), (module, names)
    assert any(n.startswith("umvu/_core") for n in names)


def test_installed_wheel_loads_modules_and_mounts(wheel_venv):
    top, _, venv = wheel_venv
    data = top / "data"
    (data / "src").mkdir(parents=True)
    (data / "src" / "hello").write_text("bound\n")
    image = data / "img.ext2"
    with open(image, "wb") as f:
        f.truncate(4 << 20)
    _run(["mkfs.ext2", "-q", "-d", str(data / "src"), str(image)])
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UMVU_", "PYTEST_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"
    script = f"""
        set -e
        for m in {' '.join(BUILTIN)}; do vu_insmod $m; done
        vu_lsmod | cut -d: -f1 | sort | tr '\\n' ' '; echo
        vumount -t vufs {data}/src {data}/bind
        cat {data}/bind/hello
        vumount -t vufuseext2 {image} {data}/mnt
        cat {data}/mnt/hello
        vuumount {data}/mnt
    """
    res = subprocess.run([str(venv / "bin" / "umvu"), "-N", "--", "bash", "-c", script],
                         capture_output=True, text=True, timeout=120, env=env,
                         cwd=top)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == BUILTIN
    assert lines[1:3] == ["bound", "bound"]
    # the hypervisor ran from the wheel, not from the tree
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import umvu; print(umvu.__file__)"],
                           capture_output=True, text=True, cwd=top).stdout
    assert where.startswith(str(venv)), where
