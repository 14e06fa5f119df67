"""The cow directory's bookkeeping, in VUOS's on-disk format.

SOURCE/.-/P            an empty regular file: P was deleted (a whiteout);
                       a whiteout of a directory hides everything below it
SOURCE/.-/P + '\\x7f'   text, one key=value a line (type, mode in octal, uid,
                       gid, rdev=major,minor): metadata the host file cannot
                       carry, e.g. a chown by an unprivileged user, or a
                       device node created as a plain file
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import struct

STORE = ".-"            # SOURCE/STORE: the bookkeeping directory
META_SUFFIX = "\x7f"
TYPES = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "c": stat.S_IFCHR,
         "b": stat.S_IFBLK, "s": stat.S_IFSOCK, "p": stat.S_IFIFO,
         "l": stat.S_IFLNK}
TYPE_LETTER = {v: k for k, v in TYPES.items()}

SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 2, 4, 8
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _beneath(dirfd: int, rel: str, flags: int) -> int:
    """openat2(dirfd, rel) that stays below dirfd and follows no symlink
    at any step: a link planted in the store (or the store replaced by
    one) can never lead its work to the lower layer."""
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, 0,
                      RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd),
                       os.fsencode(rel), how, ctypes.c_size_t(len(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return fd


class Store:
    """SOURCE/.-, reached only through a descriptor of it taken at mount
    time and openat2 below it (no symlink followed, nothing outside)."""

    def __init__(self, root: str, writable: bool):
        self.root = root.rstrip("/") + "/" + STORE
        if writable:
            try:
                os.mkdir(self.root, 0o755)
            except FileExistsError:
                pass
        try:
            self.fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY |
                              os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self.fd = None              # read-only, never written: empty
        except OSError as exc:
            raise OSError(exc.errno, f"vufs: {self.root}: not a directory of "
                          "the cow store (a symlink?)") from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # ---- reaching names below the store ----------------------------------------
    def _parent(self, rel: str, create: bool = False) -> tuple[int, str]:
        """(descriptor of rel's parent directory in the store, last name);
        the caller closes the descriptor. create: make missing parents."""
        if self.fd is None:
            raise FileNotFoundError(errno.ENOENT, "no cow store", rel)
        parts = [p for p in rel.split("/") if p]
        if not parts:
            raise OSError(errno.EINVAL, "the store itself", rel)
        fd = os.dup(self.fd)
        try:
            for part in parts[:-1]:
                try:
                    nxt = _beneath(fd, part, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nxt = _beneath(fd, part, os.O_PATH | os.O_DIRECTORY)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def _lstat(self, rel: str) -> os.stat_result:
        fd, name = self._parent(rel)
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)

    # ---- whiteouts ---------------------------------------------------------
    def deleted(self, rel: str) -> bool:
        """True when rel or one of its ancestors was deleted.

        A read, asked at every lookup below the mount: one fstatat from the
        store's descriptor. A link planted below the store could only make
        a name look deleted or not (no write follows one; see _parent)."""
        try:
            st = self._entry(rel)
        except NotADirectoryError:
            return True                 # an ancestor is a whiteout file
        return st is not None and stat.S_ISREG(st.st_mode)

    def _entry(self, rel: str) -> os.stat_result | None:
        """What the store holds at rel (no link followed), or None."""
        if self.fd is None:
            return None
        try:
            return os.stat(rel.lstrip("/") or ".", dir_fd=self.fd, follow_symlinks=False)
        except NotADirectoryError:
            raise
        except OSError:
            return None

    def records_below(self, rel: str) -> bool:
        """Whether anything below rel is recorded (a whiteout or metadata
        of a child): a listing of rel need not ask about each name if not."""
        try:
            st = self._entry(rel)
        except NotADirectoryError:
            return False
        return st is not None and stat.S_ISDIR(st.st_mode)

    def whiteout(self, rel: str) -> None:
        fd, name = self._parent(rel, create=True)
        try:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=fd)
                elif not stat.S_ISREG(st.st_mode):
                    os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o644, dir_fd=fd))
        finally:
            os.close(fd)
        self.drop_meta(rel)

    def dewhiteout(self, rel: str) -> None:
        try:
            fd, name = self._parent(rel)
        except OSError:
            return
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                return
            os.unlink(name, dir_fd=fd)
        except OSError:
            return
        finally:
            os.close(fd)
        # the directories that only held it go too
        parent = rel.rsplit("/", 1)[0]
        while parent.strip("/"):
            try:
                pfd, name = self._parent(parent)
            except OSError:
                break
            try:
                os.rmdir(name, dir_fd=pfd)
            except OSError:
                break
            finally:
                os.close(pfd)
            parent = parent.rsplit("/", 1)[0]

    # ---- metadata ------------------------------------------------------------
    def meta(self, rel: str) -> dict:
        if self.fd is None:
            return {}
        try:                            # a read: as deleted(), one call
            mfd = os.open(rel.lstrip("/") + META_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK |
                          os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return {}
        with os.fdopen(mfd) as f:
            lines = f.read().split("\n")
        out = {}
        for line in lines:
            key, _, value = line.partition("=")
            if key == "type" and value in TYPES:
                out["type"] = TYPES[value]
            elif key == "mode":
                out["mode"] = int(value, 8)
            elif key in ("uid", "gid"):
                out[key] = int(value)
            elif key == "rdev":
                major, _, minor = value.partition(",")
                out["rdev"] = os.makedev(int(major), int(minor))
        return out

    def set_meta(self, rel: str, **values) -> None:
        meta = self.meta(rel)
        meta.update(values)
        lines = []
        for key, value in meta.items():
            if key == "type":
                lines.append(f"type={TYPE_LETTER[value]}")
            elif key == "mode":
                lines.append(f"mode={value & 0o7777:o}")
            elif key == "rdev":
                lines.append(f"rdev={os.major(value)},{os.minor(value)}")
            else:
                lines.append(f"{key}={value}")
        fd, name = self._parent(rel, create=True)
        try:
            # written in place (hard links of a file share it)
            mfd = os.open(name + META_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                          os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        finally:
            os.close(fd)
        with os.fdopen(mfd, "w") as f:
            f.write("\n".join(lines) + "\n")

    def link_meta(self, old: str, new: str) -> None:
        """A hard link shares its file's metadata."""
        self._meta_to(old, new, lambda src, dst, **fds:
                      os.link(src, dst, follow_symlinks=False, **fds))

    def drop_meta(self, rel: str) -> None:
        try:
            fd, name = self._parent(rel)
        except OSError:
            return
        try:
            os.unlink(name + META_SUFFIX, dir_fd=fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def rename_meta(self, old: str, new: str) -> None:
        self._meta_to(old, new, os.rename)

    def _meta_to(self, old: str, new: str, move) -> None:
        """move(old's record, new's record, src_dir_fd=, dst_dir_fd=), each
        name reached below the store; no record for old: nothing to do."""
        try:
            ofd, oname = self._parent(old)
        except FileNotFoundError:
            return
        try:
            nfd, nname = self._parent(new, create=True)
            try:
                move(oname + META_SUFFIX, nname + META_SUFFIX,
                     src_dir_fd=ofd, dst_dir_fd=nfd)
            except FileNotFoundError:
                pass
            finally:
                os.close(nfd)
        finally:
            os.close(ofd)

    def types_below(self, rel: str) -> dict:
        """{name: S_IFMT} of rel's children whose metadata records a type
        (device nodes kept as plain files): a listing's d_type."""
        if self.fd is None:
            return {}
        try:
            fd = _beneath(self.fd, rel.lstrip("/") or ".", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return {}
        try:
            names = [n[:-len(META_SUFFIX)] for n in os.listdir(fd)
                     if n.endswith(META_SUFFIX)]
        finally:
            os.close(fd)
        found = {}
        for name in names:
            kind = self.meta(f"{rel}/{name}").get("type")
            if kind:
                found[name] = kind
        return found

    def stat_fields(self, rel: str) -> dict | None:
        """The fields a stat call must show instead of the host's."""
        meta = self.meta(rel)
        if not meta:
            return None
        fields = {}
        if "type" in meta or "mode" in meta:
            fields["mode"] = (meta.get("type", 0), meta.get("mode"))
        for key in ("uid", "gid", "rdev"):
            if key in meta:
                fields[key] = meta[key]
        return fields
