"""A complete umvu module: give the view its own host name.

Install:  cp examples/fakehostname.py ~/.vu/modules/
Use:      vu_insmod fakehostname
          vumount -t fakehostname mybox none     # source = the new name
          hostname                                # prints mybox
"""

import os
import struct

from umvu.module import Module, Service, syscall

FIELD = 65      # struct utsname: six char[65] fields; nodename is the second


class FakeHostname(Module):
    name = "fakehostname"
    description = "a host name of the view's own"

    def init(self):
        self.nodename = None

    def mount(self, request):
        self.nodename = request.source
        return Service(self, request)

    def umount(self, service, flags):
        self.nodename = None

    @syscall("uname")
    def uname(self, call):
        if self.nodename is None:
            return None                         # not mounted: the kernel answers
        fields = list(os.uname())[:5] + [""]    # sysname nodename release version machine domain
        fields[1] = self.nodename
        call.write(call.args[0], b"".join(struct.pack("65s", f.encode()[:64]) for f in fields))
        return 0
