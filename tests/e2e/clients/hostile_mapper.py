"""A hostile local user for the C1 test (run unprivileged, inside `unshare -Urm`): maps a file
of its own executable, bind-mounts a FIFO over that file's path (its private mount namespace
makes this allowed and deterministic), then connects once to the LLM endpoint given and
stays. A daemon that opens the mapped path by name blocks in open() on the FIFO.

usage: hostile_mapper.py DIR HOST PORT"""
import mmap
import os
import socket
import subprocess
import sys
import time

d, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
lib = os.path.join(d, "libhostile.so")
fifo = os.path.join(d, "fifo")
with open(lib, "wb") as f:
    f.write(b"\0" * 8192)
fd = os.open(lib, os.O_RDONLY)
m = mmap.mmap(fd, 8192, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC)
os.close(fd)
os.mkfifo(fifo)
subprocess.run(["mount", "--bind", fifo, lib], check=True)
assert not os.path.isfile(lib), "the FIFO is not over the mapped path"
s = socket.create_connection((host, port), timeout=10)
print("connected", flush=True)
while True:
    time.sleep(3600)
