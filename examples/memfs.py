"""memfs: a file system kept in the hypervisor's memory, served file by file.

It shows the served side of the module API: the view hands every call on
these files (read, write, lseek, fstat, getdents, mmap...) to the module.

Install:  cp examples/memfs.py ~/.vu/modules/
Use:      vu_insmod memfs
          vumount -t memfs none /tmp/ram
"""

import errno
import itertools
import os
import stat
import time

from umvu.module import Module, PathService, ServedFile

_inodes = itertools.count(2)


class Node:
    def __init__(self, mode, target=""):
        self.mode, self.ino, self.target = mode, next(_inodes), target
        self.data = bytearray()
        self.children = {} if stat.S_ISDIR(mode) else None
        self.uid, self.gid = os.getuid(), os.getgid()
        self.mtime = time.time_ns()

    def stat(self):
        size = len(self.target) if stat.S_ISLNK(self.mode) else len(self.data)
        return os.stat_result((self.mode, self.ino, 0x4d, 2 if self.children is not None else 1,
                               self.uid, self.gid, size, self.mtime // 10**9,
                               self.mtime // 10**9, self.mtime // 10**9))


class OpenNode(ServedFile):
    def __init__(self, node):
        self.node = node
        self.is_dir = node.children is not None

    def read(self, size, offset):
        if self.node.children is not None:
            raise OSError(errno.EISDIR, "is a directory")
        return bytes(self.node.data[offset:offset + size])

    def write(self, data, offset):
        buf = self.node.data
        if offset > len(buf):
            buf.extend(b"\0" * (offset - len(buf)))
        buf[offset:offset + len(data)] = data
        self.node.mtime = time.time_ns()
        return len(data)

    def truncate(self, size):
        del self.node.data[size:]
        self.node.data.extend(b"\0" * (size - len(self.node.data)))

    def stat(self):
        return self.node.stat()

    def readdir(self):
        kids = self.node.children
        if kids is None:
            raise OSError(errno.ENOTDIR, "not a directory")
        return [(".", 4, self.node.ino), ("..", 4, self.node.ino)] + [
            (name, stat.S_IFMT(n.mode) >> 12, n.ino) for name, n in kids.items()]


class MemService(PathService):
    def attach(self):
        self.root = Node(stat.S_IFDIR | 0o755)

    def _walk(self, path):
        """(parent node, name, node or None) for a path of this mount."""
        parts = [p for p in path[len(self.target):].split("/") if p]
        parent, node = None, self.root
        for part in parts:
            if node is None or node.children is None:
                raise OSError(errno.ENOTDIR if node else errno.ENOENT, path)
            parent, node = node, node.children.get(part)
        return parent, parts[-1] if parts else "", node

    def path_call(self, call):
        parent, name, node = self._walk(call.path)
        if call.op in ("stat", "open", "modify", "delete") and node is None:
            if not (call.op == "open" and call.flags & os.O_CREAT):
                return -errno.ENOENT
        if call.op == "stat":
            if call.name in ("readlink", "readlinkat"):
                return call.link_target(node.target) if node.target else -errno.EINVAL
            return call.stat_result(node.stat())
        if call.op == "open":
            if node is None:
                node = parent.children[name] = Node(stat.S_IFREG | (call.mode & 0o7777))
            elif call.flags & os.O_CREAT and call.flags & os.O_EXCL:
                return -errno.EEXIST
            if call.flags & os.O_TRUNC:
                del node.data[:]
            return call.serve(OpenNode(node))
        if call.op == "create":
            if node is not None:
                return -errno.EEXIST
            kind = stat.S_IFDIR if "mkdir" in call.name else (
                stat.S_IFLNK if "symlink" in call.name else stat.S_IFMT(call.mode) or stat.S_IFREG)
            parent.children[name] = Node(kind | (call.mode & 0o7777 or 0o777), call.link)
            return 0
        if call.op == "delete":
            if node.children:
                return -errno.ENOTEMPTY
            del parent.children[name]
            return 0
        if call.op == "modify" and call.name in ("chmod", "fchmodat", "fchmodat2"):
            node.mode = stat.S_IFMT(node.mode) | call.mode
            return 0
        if call.op == "rename":
            _, name2, _ = self._walk(call.path2)
            parent2 = self._walk(call.path2.rsplit("/", 1)[0] or "/")[2]
            parent2.children[name2] = parent.children.pop(name)
            return 0
        return 0 if call.op == "modify" else -errno.EPERM


class MemFs(Module):
    name = "memfs"
    description = "a file system in memory"
    families = ("path",)

    def mount(self, request):
        return MemService(self, request)
