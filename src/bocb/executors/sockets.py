"""Which TCP/UDP sockets a set of processes listens on, read from Linux's ``/proc``.

Used to check, not to trust, that the private Ray instance bocb starts listens on loopback only
(:mod:`bocb.executors.ray_executor`). Written here because the maintained option, psutil, is not
a dependency of bocb and ``ss`` is not on every machine; the format read is the kernel's
``/proc/net/{tcp,tcp6,udp,udp6}`` (one row per socket, hex address and inode) joined with each
process's ``/proc/<pid>/fd`` links (``socket:[inode]``). On systems without ``/proc`` every
function returns empty results.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

_LISTEN_TCP = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
_UNCONNECTED_UDP = "07"  # a bound UDP socket with no peer: it receives from anyone


@dataclass(frozen=True)
class Listener:
    pid: int
    protocol: str  # tcp, tcp6, udp, udp6
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.address)

    def __str__(self) -> str:
        return f"{self.protocol} {self.address}:{self.port} (pid {self.pid} {process_name(self.pid)})"


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4-mapped loopback (``::ffff:127.0.0.1``, how an IPv6 socket bound
    to 127.0.0.1 shows). Wildcards (0.0.0.0, ::) are not loopback: they accept every interface."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The command name (2nd field) may hold spaces and parentheses: split after its end.
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace").rsplit("/", 1)[-1] or "?"
    except OSError:
        return "?"


def listening(pids: set[int]) -> list[Listener]:
    """The listening TCP sockets and bound, unconnected UDP sockets held by ``pids``."""
    owners: dict[int, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # exited, or not ours to read
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owners[int(link[8:-1])] = pid
    out: list[Listener] = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{protocol}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        wanted = _LISTEN_TCP if protocol.startswith("tcp") else _UNCONNECTED_UDP
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != wanted or int(fields[9]) not in owners:
                continue
            address, port = _decode(fields[1], v6=protocol.endswith("6"))
            out.append(Listener(owners[int(fields[9])], protocol, address, port))
    return out


def _decode(hex_address: str, v6: bool) -> tuple[str, int]:
    """``0100007F:1F90`` -> ('127.0.0.1', 8080): the kernel prints each 32-bit word in host order."""
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)
    words = b"".join(struct.pack("=I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, len(raw), 4))
    family = socket.AF_INET6 if v6 else socket.AF_INET
    return socket.inet_ntop(family, words), int(port_hex, 16)
