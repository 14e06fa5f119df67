"""Unit tests of umvu.servicetable: the service table and its epochs, with real
umvu.module Service/PathService objects (no umvu session, no ptrace)."""

from __future__ import annotations

import pytest

from umvu.module import MountRequest, PathService, Service
from umvu.servicetable import ServiceTable, path_under


class FakeModule:
    name = "fake"
    ctx = None


MOD = FakeModule()


class Paths(PathService):
    """A path service that may refuse paths (confirm) and promise host
    directories (host_dir)."""

    def __init__(self, target, module=MOD, refuse=(), dirs=None):
        super().__init__(module, MountRequest("src", target, "fake"))
        self.refuse = set(refuse)
        self.dirs = dirs
        self.asked: list[str] = []

    def confirm(self, path):
        self.asked.append(path)
        return path not in self.refuse

    def host_dir(self):
        return self.dirs


def plain(target, module=MOD):
    """A service that is not a PathService (not seen by path lookups)."""
    return Service(module, MountRequest("src", target, "plain"))


# ---- path_under --------------------------------------------------------------

@pytest.mark.parametrize("path,top,expected", [
    ("/a", "/a", True),
    ("/a/b", "/a", True),
    ("/a/b/c", "/a", True),
    ("/ab", "/a", False),
    ("/ab/c", "/a", False),
    ("/a", "/a/b", False),
    ("/", "/a", False),
    ("/", "/", True),
    ("/anything/at/all", "/", True),
    ("relative", "/", False),
    ("/a/b", "/a/b", True),
    ("/a/bc", "/a/b", False),
])
def test_path_under(path, top, expected):
    assert path_under(path, top) is expected


# ---- epochs, order -----------------------------------------------------------

def test_add_gives_increasing_epochs_in_mount_order():
    table = ServiceTable()
    services = [table.add(Paths("/a")), table.add(plain("/p")), table.add(Paths("/b"))]
    assert [s.epoch for s in services] == [1, 2, 3]
    assert list(table) == services and len(table) == 3
    assert table.mount_points() == ["/a", "/b"]     # path services only


def test_epochs_never_reused_after_remove():
    table = ServiceTable()
    a = table.add(Paths("/a"))
    table.remove(a)
    b = table.add(Paths("/a"))
    assert b.epoch == 2 and len(table) == 1
    assert table.for_path("/a/x") is b


def test_newest_first():
    table = ServiceTable()
    old = table.add(Paths("/a"))
    new = table.add(Paths("/a"))
    deeper = table.add(Paths("/a/b"))
    assert table.for_path("/a/x") is new
    assert table.for_path("/a/b/x") is deeper
    assert table.for_path("/a/b") is deeper
    assert table.for_path("/a/bc") is new
    table.remove(new)
    assert table.for_path("/a/x") is old


def test_newest_first_even_when_shallower():
    """A newer mount on a parent hides an older, deeper one (VUOS epochs,
    not longest prefix)."""
    table = ServiceTable()
    table.add(Paths("/a/b"))
    top = table.add(Paths("/a"))
    assert table.for_path("/a/b/c") is top


def test_before_sees_only_older_services():
    """vumount -t vufs / /mnt twice: the second one's own lookups see the
    first, the first's see the host."""
    table = ServiceTable()
    first = table.add(Paths("/mnt"))
    second = table.add(Paths("/mnt"))
    assert table.for_path("/mnt/x") is second
    assert table.for_path("/mnt/x", second.epoch) is first
    assert table.for_path("/mnt/x", first.epoch) is None
    assert table.for_path("/mnt/x", second.epoch + 1) is second
    assert table.for_path("/mnt/x", float("inf")) is second


def test_before_with_root_mount():
    table = ServiceTable()
    root = table.add(Paths("/"))
    mnt = table.add(Paths("/mnt"))
    assert table.for_path("/etc/passwd") is root
    assert table.for_path("/mnt") is mnt
    assert table.for_path("/mnt", mnt.epoch) is root
    assert table.for_path("/mnt", root.epoch) is None
    assert table.for_path("/mntx") is root


def test_uncovered_path():
    table = ServiceTable()
    table.add(Paths("/a"))
    assert table.for_path("/ab") is None
    assert table.for_path("/") is None
    assert ServiceTable().for_path("/a") is None


# ---- confirm -----------------------------------------------------------------

def test_confirm_false_falls_through_to_older():
    table = ServiceTable()
    old = table.add(Paths("/a"))
    new = table.add(Paths("/a", refuse={"/a/skip"}))
    assert table.for_path("/a/skip") is old
    assert new.asked == ["/a/skip"]
    assert table.for_path("/a/other") is new
    # refused by all: the kernel's
    old.refuse.add("/a/skip")
    assert table.for_path("/a/skip") is None


def test_confirm_asked_only_of_candidates():
    table = ServiceTable()
    outside = table.add(Paths("/b"))
    older = table.add(Paths("/a"))
    too_new = table.add(Paths("/a"))
    assert table.for_path("/a/x", too_new.epoch) is older
    assert older.asked == ["/a/x"]
    assert outside.asked == [] and too_new.asked == []


# ---- non-path services, at(), remove -----------------------------------------

def test_plain_services_not_in_path_lookups():
    table = ServiceTable()
    p = table.add(plain("/a"))
    assert table.for_path("/a/x") is None
    assert table.at("/a") is p
    table.remove(p)
    assert table.at("/a") is None and len(table) == 0


def test_at_exact_target_newest():
    table = ServiceTable()
    a1 = table.add(Paths("/a"))
    b = table.add(Paths("/a/b"))
    assert table.at("/a") is a1
    a2 = table.add(plain("/a"))
    assert table.at("/a") is a2          # any service, newest
    assert table.at("/a/b") is b
    assert table.at("/a/b/c") is None    # covered is not "at"
    assert table.at("/") is None
    table.remove(a2)
    assert table.at("/a") is a1


def test_remove_unknown_raises():
    table = ServiceTable()
    with pytest.raises(ValueError):
        table.remove(Paths("/a"))


# ---- host_dirs ---------------------------------------------------------------

def rows(table):
    """(mount point, host dir, bottom layer) of each row of host_dirs()."""
    return [row[:3] for row in table.host_dirs()]


def test_host_dirs_plain():
    table = ServiceTable()
    table.add(Paths("/m1", dirs=("/h1", None)))
    table.add(Paths("/m2", dirs=("/top", "/bottom")))
    table.add(Paths("/m3"))                          # no promise
    table.add(plain("/m4"))                          # not a path service
    assert rows(table) == [("/m1", "/h1", None),
                                 ("/m2", "/top", "/bottom"),
                                 ("/m3", None, None)]


def test_host_dirs_skip_the_views_own():
    table = ServiceTable()
    table.add(Paths("/own", module=None, dirs=("/x", None)))
    table.add(Paths("/m", dirs=("/h", None)))
    assert rows(table) == [("/m", "/h", None)]
    assert table.mount_points() == ["/m"]


@pytest.mark.parametrize("older_target,dirs,kept", [
    ("/data", ("/data", None), False),          # at
    ("/data/sub", ("/data", None), False),      # older mount below the dir
    ("/", ("/data", None), False),              # older mount above
    ("/srv", ("/data/sub", None), True),        # unrelated
    ("/dat", ("/data", None), True),            # a prefix, not a parent
    ("/data", ("/dataset", None), True),
    ("/low", ("/top", "/low/er"), False),       # the bottom layer counts too
    ("/low", ("/top", None), True),
])
def test_host_dirs_dropped_when_overlapped_by_older(older_target, dirs, kept):
    table = ServiceTable()
    table.add(Paths(older_target))
    table.add(Paths("/m", dirs=dirs))
    assert rows(table)[1] == (("/m", *dirs) if kept else ("/m", None, None))


def test_host_dirs_newer_mounts_do_not_matter():
    """Only older mounts: a service's own calls do not see newer ones."""
    table = ServiceTable()
    table.add(Paths("/m", dirs=("/data", None)))
    table.add(Paths("/data/sub"))
    assert rows(table)[0] == ("/m", "/data", None)


def test_host_dirs_overlapped_by_the_views_own_mount():
    table = ServiceTable()
    table.add(Paths("/data/own", module=None))
    table.add(Paths("/m", dirs=("/data", None)))
    assert rows(table) == [("/m", None, None)]


def test_host_dirs_layer_protocol():
    """Two layers carry the top's bookkeeping names; a bind or a dropped
    promise carries none."""
    table = ServiceTable()
    bind = table.add(Paths("/b", dirs=("/hb", None)))
    cow = table.add(Paths("/c", dirs=("/top", "/bottom")))
    table.add(Paths("/top/x"))
    late = table.add(Paths("/d", dirs=("/top", "/bottom2")))     # overlapped
    for s in (bind, cow, late):
        s.layer_store, s.layer_meta_suffix = ".-", ":meta"
    table_rows = table.host_dirs()
    assert [row[3:] for row in table_rows] == [
        (None, None), (".-", ":meta"), (None, None), (None, None)]


# ---- of_module ---------------------------------------------------------------

def test_of_module_ignores_internal_and_other_modules():
    other = FakeModule()
    table = ServiceTable()
    a = table.add(Paths("/a"))
    dev = Paths("/dev/fuse")
    dev.internal = True                      # what ServiceContext.add_service does
    table.add(dev)
    b = table.add(plain("/b"))
    table.add(Paths("/c", module=other))
    assert table.of_module(MOD) == [a, b]
    assert table.for_path("/dev/fuse") is dev    # internal, yet it serves
    table.remove(a)
    table.remove(b)
    assert table.of_module(MOD) == []           # only internal left: unloadable
    assert len(table) == 2
    assert Service.internal is False             # the default
