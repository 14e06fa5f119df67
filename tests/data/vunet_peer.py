"""A peer of the vunet tests, run inside a stack (vustack):

    vunet_peer.py MY_ADDR OTHER_ADDR

serves TCP and UDP echo on MY_ADDR:7007 in a thread, then talks to the
other peer's (retrying until it is up), pings it with an ICMP datagram
socket, and keeps serving a few seconds for the other side. Prints one
line per check."""

import socket
import sys
import threading
import time

me, other = sys.argv[1], sys.argv[2]
PORT = 7007


def serve_tcp(srv):
    while True:
        conn, _ = srv.accept()
        with conn:
            data = conn.recv(65536)
            conn.sendall(data[::-1])


def serve_udp(sock):
    while True:
        data, addr = sock.recvfrom(65536)
        sock.sendto(data.upper(), addr)


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((me, PORT))
srv.listen()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((me, PORT))
threading.Thread(target=serve_tcp, args=(srv,), daemon=True).start()
threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()

deadline = time.time() + 20
while True:
    try:
        c = socket.create_connection((other, PORT), timeout=2)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
with c:
    c.sendall(f"tcp from {me}".encode())
    print("tcp", c.recv(100)[::-1].decode(), "peer", c.getpeername()[0], flush=True)

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1)
for _ in range(10):
    u.sendto(f"udp from {me}".encode(), (other, PORT))
    try:
        data, addr = u.recvfrom(100)
        print("udp", data.decode().lower(), "peer", addr[0], flush=True)
        break
    except socket.timeout:
        pass

icmp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
icmp.settimeout(2)
icmp.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x01vunet", (other, 0))
data, addr = icmp.recvfrom(100)
print("icmp reply", data[0], "from", addr[0], flush=True)
time.sleep(3)       # the other side may still be talking to us
