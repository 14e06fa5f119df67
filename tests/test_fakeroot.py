"""The fakeroot workflow, unprivileged (issue 13, item 8): uid 65534 runs
`umvu --root --cow /:STORE` (unrealuidgid and a cow over /, as virtual
root) and installs a small local .deb with dpkg, builds a .deb whose files
belong to root, copies up root's data-less lock files, and is refused, with
EACCES, the copy of data it cannot read. The host never changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import NOBODY

PKG = "umvu-fakeroot-probe"
SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: what dpkg may touch, and the package's own paths
WATCHED = ("/var/lib/dpkg", "/var/log/dpkg.log", f"/usr/share/{PKG}",
           f"/etc/{PKG}", f"/usr/share/doc/{PKG}")



def manifest() -> dict:
    """path -> (mode, uid, gid, size, mtime_ns, content digest) of what the
    test could touch; the top of /etc and /usr/share by name."""
    import hashlib
    found = {}
    for top in WATCHED:
        if not os.path.lexists(top):
            continue
        walk = [(top, [], [""])] if not os.path.isdir(top) else os.walk(top)
        for dirpath, _, files in walk:
            for name in [""] + files:
                path = os.path.join(dirpath, name) if name else dirpath
                st = os.lstat(path)
                digest = ""
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                found[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                               st.st_mtime_ns, digest)
    found["/etc:"] = tuple(sorted(os.listdir("/etc")))
    found["/usr/share:"] = tuple(sorted(os.listdir("/usr/share")))
    return found


@pytest.fixture
def area(request, run_umvu):
    run_umvu.home(NOBODY)
    d = Path(tempfile.mkdtemp(prefix="umvu-fakeroot-", dir="/tmp"))
    os.chmod(d, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def build_deb(area: Path) -> Path:
    root = area / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PKG}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: umvu tests <umvu@localhost>\n"
        "Description: a package the umvu tests install in a view\n")
    (root / "usr" / "share" / PKG).mkdir(parents=True)
    (root / "usr" / "share" / PKG / "hello").write_text("hello\n")
    (root / "etc" / PKG).mkdir(parents=True)
    (root / "etc" / PKG / "conf").write_text("conf=1\n")
    deb = area / f"{PKG}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    os.chmod(deb, 0o644)
    return deb


def test_dpkg_install_and_build_as_virtual_root(run_umvu, area):
    deb = build_deb(area)
    store = area / "store"
    store.mkdir()
    work = area / "work"                    # the user's: a tree to package
    (work / "tree" / "DEBIAN").mkdir(parents=True)
    (work / "tree" / "DEBIAN" / "control").write_text(
        f"Package: {PKG}-built\nVersion: 2.0\nArchitecture: all\n"
        "Maintainer: umvu tests <umvu@localhost>\nDescription: built in a view\n")
    (work / "tree" / "usr" / "bin").mkdir(parents=True)
    (work / "tree" / "usr" / "bin" / "probe").write_text("#!/bin/sh\n")
    locks = area / "locks"                  # root's, as dpkg's lock files are
    locks.mkdir()
    (locks / "lock").touch()
    os.chmod(locks / "lock", 0o600)
    (locks / "secret").write_text("root's data\n")
    os.chmod(locks / "secret", 0o600)
    for path in (store, work, *work.rglob("*")):
        os.chown(path, NOBODY, NOBODY)
    before = manifest()
    script = textwrap.dedent(f"""
        id -u
        dpkg -i {deb}; echo "install=$?"
        dpkg -s {PKG} | grep '^Status:'
        cat /usr/share/{PKG}/hello
        stat -c 'owner %U:%G' /usr/share/{PKG}/hello
        chown -R root:root {work}/tree
        dpkg-deb --build {work}/tree {work}/built.deb >/dev/null; echo "build=$?"
        dpkg-deb -c {work}/built.deb
        : >> {locks}/lock && echo "lock copied"
        echo more >> {locks}/secret; echo "secret=$?"
        cat {locks}/secret > /dev/null; echo "read=$?"
    """)
    res = run_umvu(script, user=NOBODY, opts=("-N", "--root", "--cow", f"/:{store}"),
                   extra_env={"PATH": f"{os.environ.get('PATH', '')}:{SBIN}"},
                   timeout=300)
    out = res.stdout
    assert out.startswith("0\n"), res
    assert "install=0" in out and "Status: install ok installed" in out, res
    assert "hello\n" in out and "owner root:root" in out, res
    assert "build=0" in out, res
    listing = [ln for ln in out.splitlines() if ln.startswith(("drw", "-rw"))]
    assert any(ln.endswith("./usr/bin/probe") for ln in listing), res
    assert listing and all(ln.split()[1] == "root/root" for ln in listing), listing
    assert "lock copied" in out, res
    assert "secret=1" in out and "read=1" in out, res
    assert "Permission denied" in res.stderr, res
    # the host: unchanged where dpkg and the test could have written
    assert manifest() == before
    assert not (work / "built.deb").exists()
    assert (locks / "lock").stat().st_size == 0
    # no silently empty copy of the data the user could not read
    assert not (store / locks.relative_to("/") / "secret").exists()
    assert (store / locks.relative_to("/") / "lock").exists()
