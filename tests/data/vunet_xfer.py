"""vunet_xfer.py recv ADDR PORT | send ADDR PORT MEGABYTES: a TCP transfer
(bench and stop-count test). recv prints the bytes it got."""

import socket
import sys
import time

mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "recv":
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen()
    print("listening", flush=True)
    conn, _ = srv.accept()
    buf = bytearray(1 << 18)
    total = 0
    t0 = time.perf_counter()
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        total += n
    print("received", total, "seconds", round(time.perf_counter() - t0, 4), flush=True)
else:
    size = int(float(sys.argv[4]) * (1 << 20))
    deadline = time.time() + 20
    while True:
        try:
            c = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    chunk = b"x" * (1 << 18)
    sent = 0
    while sent < size:
        c.sendall(chunk[:size - sent])
        sent += min(len(chunk), size - sent)
    c.close()
    print("sent", sent, flush=True)
