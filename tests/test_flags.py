"""One-shot flags (umvu/oneshot.py): each alone and in combination, run
unprivileged (uid 65534), including a virtual-root package install over a
copy-on-write /."""

from __future__ import annotations

import os
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from umvu import oneshot
from umvu.oneshot import FlagError

NOBODY = 65534


@pytest.fixture
def nb(run_umvu):
    """run_umvu as uid 65534, with flags: nb(script, *flags)."""
    def run(script, *flags, **kw):
        return run_umvu(script, user="nobody", opts=("-N", *flags), **kw)
    run.home = run_umvu.home("nobody")
    return run


def _own(path: Path) -> Path:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, NOBODY, NOBODY)
    return path


def _temp_leftovers() -> set:
    return {n for n in os.listdir("/tmp") if n.startswith(("umvu-cow-", "umvu-clear-"))}


# ---- each flag alone ------------------------------------------------------------

def test_root(nb):
    r = nb("id -u; id -g; umvu --dump", "--root")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0\n0\ninsmod unrealuidgid\nuser root\n"
    r = nb("id -u", "-0")                       # proot's spelling
    assert (r.returncode, r.stdout) == (0, "0\n"), r.stderr


def test_cow_with_a_temporary_store(nb):
    before = _temp_leftovers()
    r = nb("echo 10.0.0.1 umvu-test >> /etc/hosts && tail -1 /etc/hosts && "
           "umvu --dump | grep -c 'mount -t vufs -o cow /tmp/umvu-cow-.* /etc'",
           "--cow", "/etc")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "10.0.0.1 umvu-test\n1\n"
    assert "umvu-test" not in Path("/etc/hosts").read_text()
    assert _temp_leftovers() <= before          # the store is gone


def test_cow_with_a_store_kept(nb):
    store = nb.home / "store"                   # made if missing
    r = nb("echo hi > /opt/newfile && cat /opt/newfile", "--cow", f"/opt:{store}")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
    assert (store / "newfile").read_text() == "hi\n"
    assert not Path("/opt/newfile").exists()
    r = nb("cat /opt/newfile", "--cow", f"/opt:{store}")      # the next session
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr


def test_clear(nb):
    before = _temp_leftovers()
    r = nb("ls -A /var | wc -l; touch /var/x && ls /var", "--clear", "/var")
    assert (r.returncode, r.stdout) == (0, "0\nx\n"), r.stderr
    assert not Path("/var/x").exists()
    assert _temp_leftovers() <= before


def test_bind(nb):
    src = nb.home / "src"
    src.mkdir()
    (src / "f").write_text("bound\n")
    _own(src)
    r = nb("cat /srv/there/f", "--bind", f"{src}:/srv/there")
    assert (r.returncode, r.stdout) == (0, "bound\n"), r.stderr
    r = nb(f"cat {src}/f; umvu --dump | tail -1", "-b", str(src))  # onto itself
    assert (r.returncode, r.stdout) == (0, "bound\nmount -t vufs ~/src ~/src\n"), r.stderr
    r = nb("true", "--bind", ":/x")
    assert (r.returncode, r.stderr) == (2, "umvu: --bind :/x: expected SRC[:DST]\n")


def test_ro(nb):
    d = nb.home / "rw"
    d.mkdir()
    _own(d)
    r = nb(f"touch {d}/a; ls {d}", "--ro", str(d))
    assert r.returncode == 0
    assert "Read-only file system" in r.stderr and r.stdout == ""


def test_disk(nb):
    img = nb.home / "disk.img"
    img.write_bytes(b"first sector".ljust(512, b"\0") * 8)
    img2 = nb.home / "disk2.img"
    img2.write_bytes(b"second disk".ljust(512, b"\0") * 2)
    _own(nb.home)
    r = nb('echo "$VU_DISK0 $VU_DISK1"; head -c 12 "$VU_DISK0"; echo; '
           'head -c 11 /dev/vdb; echo; blockdev --getsize64 /dev/vda',
           "--disk", str(img), "--disk", str(img2))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "/dev/vda /dev/vdb\nfirst sector\nsecond disk\n4096\n"
    r = nb("true", "--disk", str(nb.home / "missing.img"))
    assert r.returncode == 2
    assert r.stderr == f"umvu: --disk {nb.home}/missing.img: no such file\n"


def test_image(nb, tmp_path):
    """vufuse with the type guessed by blkid (fuse2fs serves it)."""
    tree = tmp_path / "tree"
    (tree / "dir").mkdir(parents=True)
    (tree / "dir" / "hello.txt").write_text("hello from an image\n")
    img = nb.home / "fs.img"
    subprocess.run(["mkfs.ext2", "-q", "-F", "-d", str(tree), str(img), "1M"],
                   check=True, capture_output=True,
                   env=dict(os.environ, PATH="/sbin:/usr/sbin:/usr/bin:/bin"))
    _own(nb.home)
    r = nb("cat /mnt/img/dir/hello.txt; umvu --dump | tail -1",
           "--image", f"{img}:/mnt/img")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from an image\nmount -t vufuseext2 ~/fs.img /mnt/img\n"
    r = nb("true", "--image", str(img))
    assert (r.returncode, r.stderr) == (2, f"umvu: --image {img}: expected IMG:DIR\n")


def test_hostname(nb):
    r = nb("hostname; uname -n; cat /proc/sys/kernel/hostname", "--hostname", "box")
    assert (r.returncode, r.stdout) == (0, "box\nbox\nbox\n"), r.stderr


def test_time_scale(nb):
    start = time.monotonic()
    r = nb("cat /etc/vutime/frequency; sleep 5", "--time-scale", "10")
    elapsed = time.monotonic() - start
    assert (r.returncode, r.stdout) == (0, "10\n"), r.stderr
    assert elapsed < 3, elapsed                 # 5 s of the view's time: 0.5 s
    r = nb("true", "--time-scale", "fast")
    assert r.returncode == 2
    assert r.stderr.startswith("umvu: --time-scale fast: time-scale 'fast': not a number")


def test_net(nb):
    from umvu import loader
    try:
        loader.find("vunet")
    except OSError:
        r = nb("true", "--net", "none")
        assert (r.returncode, r.stderr) == (
            2, "umvu: --net: needs module vunet, which is not installed\n")
    else:
        r = nb("python3 -c 'import socket; socket.socket()' 2>&1 | tail -1; "
               "umvu --dump", "--net", "none")
        assert r.returncode == 0, r.stderr
        assert r.stdout == ("OSError: [Errno 97] Address family not supported by "
                            "protocol\ninsmod vunet\nmount -t vunetnull none "
                            "/dev/net/umvu\nstack /dev/net/umvu\n")
    r = nb("true", "--net", "tcp")
    assert (r.returncode, r.stderr) == (2, "umvu: --net tcp: expected slirp, "
                                           "vde:URL or none\n")


def test_a_missing_module_is_named():
    args = _args(["--hostname", "x", "--root"])
    statements = oneshot.OneShot().statements(args)

    def find(name):
        if name == "vumisc":
            raise OSError(2, "vumisc: no such module")
        return object
    with pytest.raises(FlagError, match="--hostname/--time-scale: needs module "
                                        "vumisc, which is not installed"):
        oneshot.missing_modules(statements, find)


def _args(argv):
    from umvu.cli import build_parser
    return build_parser().parse_args(argv + ["true"])


def test_flags_become_statements_in_order():
    args = _args(["--bind", "/a:/b", "-0", "--cow", "/etc:/s", "--hostname", "h",
                  "--ro", "/usr", "--time-scale", "2"])
    text = "\n".join(s.format() for s in oneshot.OneShot().statements(args))
    assert text == ("insmod unrealuidgid vufs vumisc\n"
                    "mount -t vufs /a /b\n"
                    "mount -t vufs -o cow /s /etc\n"
                    "mount -t vufs -r /usr /usr\n"
                    "user root\nhostname h\ntime-scale 2")


# ---- guessing image types --------------------------------------------------------

def test_guess_type(tmp_path):
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("x", "y")
    assert oneshot.guess_type(str(z)) == "zip"
    ext = tmp_path / "ext.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(ext), "2M"], check=True,
                   capture_output=True, env=dict(os.environ, PATH="/sbin:/usr/sbin:/usr/bin:/bin"))
    assert oneshot.guess_type(str(ext)) == "ext4"
    head = bytearray(0x8010)
    head[0x438:0x43a] = b"\x53\xef"
    assert oneshot._magic(bytes(head), "x") == "ext2"
    head[0x45c] = 4                             # has_journal
    assert oneshot._magic(bytes(head), "x") == "ext3"
    assert oneshot._magic(b"hsqs" + bytes(0x8010), "x") == "squashfs"
    iso = bytearray(0x8010)
    iso[0x8001:0x8006] = b"CD001"
    assert oneshot._magic(bytes(iso), "x") == "iso9660"
    with pytest.raises(FlagError, match="cannot tell its file system"):
        oneshot._magic(bytes(0x8010), "x")


# ---- in combination ---------------------------------------------------------------

def test_combined(nb):
    src = nb.home / "data"
    src.mkdir()
    (src / "f").write_text("data\n")
    img = nb.home / "disk.img"
    img.write_bytes(b"D" * 1024)
    _own(nb.home)
    r = nb("id -u; hostname; cat /data/f; ls -A /var/tmp | wc -l; "
           "echo x > /etc/umvu-x && cat /etc/umvu-x; head -c 3 $VU_DISK0; echo; "
           "touch /usr/x 2>/dev/null || echo ro; umvu --dump",
           "-0", "--cow", "/etc", "-b", f"{src}:/data", "--clear", "/var/tmp",
           "--ro", "/usr", "--disk", str(img), "--hostname", "combo")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:7] == ["0", "combo", "data", "0", "x", "DDD", "ro"]
    dump = lines[7:]
    assert dump[0] == "insmod unrealuidgid vufs vudev vumisc"
    assert dump[1].startswith("mount -t vufs -o cow /tmp/umvu-cow-")
    assert dump[2] == "mount -t vufs ~/data /data"
    assert dump[3].startswith("mount -t vufs /tmp/umvu-clear-")
    assert dump[4:] == ["mount -t vufs -r /usr /usr",
                        "mount -t vudevloop ~/disk.img /dev/vda",
                        "user root", "hostname combo"]
    assert not Path("/etc/umvu-x").exists()


def test_flags_and_a_view_file(nb):
    view = nb.home / "v.vu"
    view.write_text("insmod vufs\nmount -t vufs /usr/share/doc /docs\n")
    r = nb("ls /docs >/dev/null && id -u && umvu --dump", "--view", str(view), "--root")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("0\ninsmod vufs unrealuidgid\nmount -t vufs /usr/share/doc "
                        "/docs\nuser root\n")


def test_virtual_root_installs_a_package(nb):
    """`umvu --root --cow / -- dpkg -i x.deb`: unprivileged; the host's
    dpkg database and /usr never change."""
    pkg = nb.home / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr" / "bin").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: umvu-hello\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: umvu tests <umvu@example.org>\n"
        "Description: installed in a virtual root\n")
    tool = pkg / "usr" / "bin" / "umvu-hello"
    tool.write_text("#!/bin/sh\necho hello from umvu-hello\n")
    tool.chmod(0o755)
    deb = nb.home / "hello.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(deb)],
                   check=True, capture_output=True)
    _own(nb.home)
    r = nb(f"dpkg -i {deb} >/dev/null && umvu-hello && stat -c '%U %a' "
           "/usr/bin/umvu-hello && dpkg-query -W -f '${Status}\\n' umvu-hello",
           "--root", "--cow", "/", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from umvu-hello\nroot 755\ninstall ok installed\n"
    assert not Path("/usr/bin/umvu-hello").exists()
    status = subprocess.run(["dpkg-query", "-W", "umvu-hello"], capture_output=True)
    assert status.returncode != 0               # the host never heard of it


# ---- --trace=summary ------------------------------------------------------------

def test_trace_summary(run_umvu):
    r = run_umvu("cat /etc/hostname >/dev/null; echo x >> /etc/motd",
                 opts=("-N", "--trace=summary", "--cow", "/etc"))
    assert r.returncode == 0, r.stderr
    err = r.stderr.splitlines()
    assert err[0].startswith("trace summary: ") and "reached the hypervisor" in err[0]
    assert "were decided in C" in err[1]
    table = err[err.index(next(l for l in err if l.startswith("% time"))):]
    assert table[0].split() == ["%", "time", "seconds", "usecs/call", "calls",
                                "errors", "syscall"]
    table = table[:table.index("")]
    names = {line.split()[-1] for line in table[2:] if not line.startswith("-")}
    assert {"vu_insmod", "mount", "openat", "total"} <= names
    assert "umvu: [" not in r.stderr            # no per-call lines
    by_module = err[err.index("  calls answered by") + 1:]
    assert any(line.split() == [line.split()[0], "vufs"] for line in by_module)
    by_kind = err[err.index("  calls answer") + 1:]
    assert {line.split()[1] for line in by_kind} >= {"redirect", "value"}


def test_trace_lines_unchanged(run_umvu):
    r = run_umvu(["sh", "-c", "vu_insmod vufs"], opts=("-N", "--trace"))
    assert r.returncode == 0
    assert 'vu_insmod("vufs", 0) = 0 <umvu>' in r.stderr
    assert "trace summary" not in r.stderr
