"""The vufs examples of the VUOS tutorial (seed 001, "VUOS/umvu basic
concepts") and the FOSDEM 2020 "Remount /etc/ in COW mode" example (seed
004), run for real and compared with the host's own answers."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("_vufs_helpers")
from _vufs_helpers import NOBODY, native, sections, sha256  # noqa: E402

pytest_plugins = ["_vufs_helpers"]     # fixtures: vu, tdir, udir


def host_ls(path: str) -> str:
    res = native(f"ls {path}")
    assert res.rc == 0, res
    return res.out


def test_insmod_lsmod(vu):
    res = vu("vu_insmod vufs; vu_lsmod")
    assert res.rc == 0, res
    assert res.out == "vufs: vu filesystem patchworking\n", res
    assert res.err == "", res


def test_mount_root_on_mnt_and_nesting(vu):
    """`ls /mnt` as on the host before; after `vumount -t vufs / /mnt` /mnt is
    /, /mnt/mnt is the host's /mnt; after a second mount /mnt/mnt is / and
    /mnt/mnt/mnt is the host's /mnt."""
    root, mnt = host_ls("/"), host_ls("/mnt")
    res = vu("""\
        vu_insmod vufs
        echo "== before"; ls /mnt
        vumount -t vufs / /mnt || echo MOUNT1-FAILED
        echo "== mnt"; ls /mnt
        echo "== root"; ls /
        echo "== mnt/mnt"; ls /mnt/mnt
        vumount -t vufs / /mnt || echo MOUNT2-FAILED
        echo "== 2:mnt/mnt"; ls /mnt/mnt
        echo "== 2:mnt/mnt/mnt"; ls /mnt/mnt/mnt
        echo "== 2:mnt"; ls /mnt
        echo "== 2:passwd"; cmp /mnt/etc/passwd /etc/passwd && cmp /mnt/mnt/etc/passwd /etc/passwd && echo same
        """)
    assert res.rc == 0 and "FAILED" not in res.out, res
    s = sections(res.out)
    as_text = lambda key: s[key] + "\n" if s[key] else ""  # noqa: E731
    assert as_text("before") == mnt, res
    assert as_text("mnt") == root, res
    assert as_text("root") == root, res
    assert as_text("mnt/mnt") == mnt, res
    assert as_text("2:mnt/mnt") == root, res
    assert as_text("2:mnt/mnt/mnt") == mnt, res
    assert as_text("2:mnt") == root, res
    assert s["2:passwd"] == "same", res
    assert res.err == "", res


@pytest.mark.skipif(os.path.lexists("/unreal"), reason="the host has a /unreal")
def test_unreal_mount_point(vu):
    """The mount point need not exist: it is reachable by any path but does
    not appear in the listing of its parent."""
    root = host_ls("/")
    res = vu("""\
        vu_insmod vufs
        echo "== before"; ls /unreal; echo "rc=$?"
        vumount -t vufs / /unreal || echo MOUNT-FAILED
        echo "== unreal"; ls /unreal
        echo "== root"; ls /
        echo "== ls -d"; ls -d /unreal
        echo "== relative"; cd /; ls -d unreal
        echo "== stat"; stat -c %F unreal
        """)
    assert "MOUNT-FAILED" not in res.out, res
    s = sections(res.out)
    assert s["before"] == "rc=2", res
    assert "ls: cannot access '/unreal': No such file or directory" in res.err, res
    assert s["unreal"] + "\n" == root, res
    assert s["root"] + "\n" == root, res
    assert "unreal" not in s["root"].split("\n"), res
    assert s["ls -d"] == "/unreal", res
    assert s["relative"] == "unreal", res
    assert s["stat"] == "directory", res
    assert not os.path.lexists("/unreal")


def test_file_over_file_tempfile(vu, tdir):
    target = os.path.join(tdir, "resolv.conf")
    with open(target, "w") as f:
        f.write("nameserver 10.0.2.3\n")
    res = vu(f"""\
        vu_insmod vufs
        echo "== before"; cat {target}
        echo nameserver 80.80.80.80 > {tdir}/new.conf
        vumount -t vufs {tdir}/new.conf {target} || echo MOUNT-FAILED
        echo "== after"; cat {target}
        echo "== ls"; ls {tdir}
        """)
    s = sections(res.out)
    assert s["before"] == "nameserver 10.0.2.3", res
    assert s["after"] == "nameserver 80.80.80.80", res
    assert s["ls"].split() == ["new.conf", "resolv.conf"], res
    with open(target) as f:
        assert f.read() == "nameserver 10.0.2.3\n"


def test_file_over_etc_resolv_conf(vu, tdir):
    """The tutorial's own example, on /etc/resolv.conf itself: the view sees
    the new content, the host file is untouched."""
    host = "/etc/resolv.conf"
    if not os.path.isfile(host):
        pytest.skip("no /etc/resolv.conf on this host")
    with open(host) as f:
        original = f.read()
    digest = sha256(host)
    res = vu(f"""\
        vu_insmod vufs
        echo "== before"; cat /etc/resolv.conf
        echo nameserver 80.80.80.80 > {tdir}/resolv.conf
        vumount -t vufs {tdir}/resolv.conf /etc/resolv.conf || echo MOUNT-FAILED
        echo "== after"; cat /etc/resolv.conf
        echo nameserver 9.9.9.9 >> /etc/resolv.conf
        echo "== appended"; cat /etc/resolv.conf
        """)
    s = sections(res.out)
    assert s["before"] + "\n" == original, res
    assert s["after"] == "nameserver 80.80.80.80", res
    assert s["appended"] == "nameserver 80.80.80.80\nnameserver 9.9.9.9", res
    with open(f"{tdir}/resolv.conf") as f:
        assert f.read() == "nameserver 80.80.80.80\nnameserver 9.9.9.9\n"
    assert sha256(host) == digest


@pytest.fixture
def host_passwd():
    digest, st = sha256("/etc/passwd"), os.stat("/etc/passwd")
    yield
    assert sha256("/etc/passwd") == digest, "the host /etc/passwd changed"
    after = os.stat("/etc/passwd")
    assert (after.st_mode, after.st_uid, after.st_mtime_ns) == \
        (st.st_mode, st.st_uid, st.st_mtime_ns)


def test_fosdem_cow_etc_unprivileged(vu, udir, host_passwd):
    """FOSDEM 2020: an unprivileged user remounts /etc copy-on-write and
    edits /etc/passwd; only the view changes."""
    with open("/etc/passwd") as f:
        lines = f.read().splitlines(keepends=True)
    expected = "".join(line for line in lines if not line.startswith("root"))
    res = vu("""\
        vu_insmod vufs
        mkdir $T/cowetc
        vumount -t vufs -o cow $T/cowetc /etc || echo MOUNT-FAILED
        chmod 644 /etc/passwd; echo "chmod=$?"
        sed -e '/^root/d' -i /etc/passwd; echo "sed=$?"
        echo "== count"; grep -c ^root: /etc/passwd
        echo "== mode"; stat -c %a /etc/passwd
        echo "== nss"; getent passwd daemon >/dev/null; echo "before=$?"
        sed -e '/^daemon:/d' -i /etc/passwd; getent passwd daemon; echo "after=$?"
        """, user=NOBODY, env={"T": udir})
    assert "MOUNT-FAILED" not in res.out, res
    assert "chmod=0" in res.out and "sed=0" in res.out, res
    s = sections(res.out)
    assert s["count"] == "0", res
    assert s["mode"] == "644", res
    # like "I have no name!" in the talk: the C library's user lookup (NSS)
    # reads the view's /etc/passwd ("nobody" and "root" would be synthesized
    # by nss-systemd, so a plain system user is deleted here)
    assert s["nss"] == "before=0\nafter=2", res
    copy = f"{udir}/cowetc/passwd"
    with open(copy) as f:
        text = f.read()
    assert text == "".join(line for line in expected.splitlines(keepends=True)
                           if not line.startswith("daemon:")), res
    assert os.stat(copy).st_uid == NOBODY
    assert os.path.isdir(f"{udir}/cowetc/.-")
