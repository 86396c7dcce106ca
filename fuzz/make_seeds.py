#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz/corpus/<target>/ (committed).

Run from anywhere: python3 fuzz/make_seeds.py. The input formats are the
ones the doc comments of fuzz_targets/*.rs describe.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- virtq_walk -------------------------------------------------------------
NEXT, WRITE, INDIRECT = 1, 2, 4
BASE, DESC, AVAIL, USED = 0x1000, 0x1000, 0x1100, 0x1140


def desc(addr, length, flags=0, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)


def ring(flags, size_log2, descs, heads, tables=(), next_avail=0, rings=None):
    """Header and image: `descs` at DESC, `heads` offered from `next_avail`,
    `tables` as (gpa, [descs]) anywhere in the image."""
    size = 1 << size_log2
    img = bytearray(0x300)
    d, a, u = rings or (DESC, AVAIL, USED)
    for i, raw in enumerate(descs):
        img[d - BASE + 16 * i:d - BASE + 16 * i + 16] = raw
    for k, h in enumerate(heads):
        slot = (next_avail + k) % size
        img[a - BASE + 4 + 2 * slot:a - BASE + 6 + 2 * slot] = struct.pack("<H", h)
    img[a - BASE + 2:a - BASE + 4] = struct.pack("<H", (next_avail + len(heads)) & 0xffff)
    for gpa, entries in tables:
        raw = b"".join(entries)
        img[gpa - BASE:gpa - BASE + len(raw)] = raw
    offs = [(x - BASE) for x in (d, a, u)]
    hdr = bytes([flags, size_log2]) + struct.pack("<HHHHH", next_avail, next_avail, *offs)
    return hdr + bytes(img)


# A transmit chain (header buffer, then frame) and a one-buffer one.
put("virtq_walk", "tx_two_chains", ring(0, 3, [desc(0x1400, 12, NEXT, 1), desc(0x1600, 100), desc(0x1700, 60)], [0, 2]))
# Receive buffers (WRITE), the receive direction walked first, dirty log on.
put("virtq_walk", "rx_logged", ring(8 | 4, 3, [desc(0x1800, 1526, WRITE), desc(0x2000, 0x200, WRITE | NEXT, 2), desc(0x8000, 64, WRITE)], [0, 1]))
# An indirect table of three, the last buffer across two region boundaries.
put("virtq_walk", "indirect", ring(1, 2, [desc(0x1200, 48, INDIRECT)], [0],
                                   tables=[(0x1200, [desc(0x1400, 12, NEXT, 1), desc(0x1500, 200, NEXT, 2), desc(0x2080, 0x200)])]))
# EVENT_IDX, indices about to wrap, rings placed by the header.
put("virtq_walk", "event_idx_wrap", ring(2 | 16, 2, [desc(0x1400, 80), desc(0x1500, 80), desc(0x1600, 80)], [0, 1, 2],
                                         next_avail=0xfffe, rings=(0x1000, 0x1040, 0x1080)))
# A transmit chain and a receive chain: the frame copied guest to guest.
put("virtq_walk", "tx_then_rx_copy", ring(0, 1, [desc(0x1400, 200), desc(0x2040, 0x100, WRITE)], [0, 1]))
# A `next` loop, and a head out of range.
put("virtq_walk", "loop", ring(0, 1, [desc(0x1400, 10, NEXT, 1), desc(0x1500, 10, NEXT, 0)], [0, 7]))

# --- net_hdr_validate -------------------------------------------------------
ALL_CAPS = 0x0f
MAC_D, MAC_S = bytes.fromhex("525400000002"), bytes.fromhex("525400000001")


def net_hdr(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def ipv4(total, proto=6):
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0x1234, 0x4000, 64, proto, 0,
                       bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))


def ipv6(payload):
    return struct.pack(">IHBB16s16s", 6 << 28, payload, 6, 64, b"\xfd" + b"\0" * 14 + b"\1", b"\xfd" + b"\0" * 14 + b"\2")


def tcp(opts=b"", flags=0x18):
    doff = (20 + len(opts)) // 4
    return struct.pack(">HHIIBBHHH", 40000, 5201, 1000, 0, doff << 4, flags, 65535, 0, 0) + opts


def hdr_seed(caps, h, head, pad):
    return bytes([caps]) + h + struct.pack("<H", pad) + head


# TSO over IPv4, 12 bytes of TCP options, 4000 bytes of payload.
t = tcp(b"\x01\x01\x08\x0a" + b"\0" * 8)
payload = 4000
put("net_hdr_validate", "tso4", hdr_seed(ALL_CAPS, net_hdr(1, 1, 66, 1448, 34, 16),
                                         MAC_D + MAC_S + b"\x08\x00" + ipv4(20 + len(t) + payload) + t, payload))
# TSO over IPv6 with an 802.1Q tag and ECN (CWR on the first segment).
t = tcp(flags=0x98)
put("net_hdr_validate", "tso6_vlan_ecn", hdr_seed(ALL_CAPS, net_hdr(1, 0x84, 78, 1000, 58, 16),
                                                  MAC_D + MAC_S + b"\x81\x00\x00\x0a\x86\xdd" + ipv6(len(t) + 2500) + t, 2500))
# A UDP checksum only (NEEDS_CSUM, no GSO), a whole 142-byte frame.
udp = struct.pack(">HHHH", 5353, 5353, 108, 0) + b"\x55" * 100
put("net_hdr_validate", "udp_csum", hdr_seed(0x01, net_hdr(1, 0, 0, 0, 34, 6),
                                             MAC_D + MAC_S + b"\x08\x00" + ipv4(20 + len(udp), 17) + udp, 0))
# No offload at all: the fast path.
put("net_hdr_validate", "plain", hdr_seed(0, net_hdr(0, 0, 0, 0, 0, 0), MAC_D + MAC_S + b"\x08\x00" + b"\0" * 46, 0))

# --- frame_parse --------------------------------------------------------------
A, B, BCAST = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b"), b"\xff" * 6


def rec(ctl, frame):
    return bytes([ctl, len(frame)]) + frame


def eth(dst, src, tag=None, size=60):
    f = dst + src + (b"\x81\x00" + struct.pack(">H", tag) if tag is not None else b"") + b"\x08\x00"
    return f + b"\xab" * max(0, size - len(f))


put("frame_parse", "learn_then_unicast",
    rec(0, eth(BCAST, A)) + rec(2, eth(A, B, 10)) + rec(0, eth(B, A)) + rec(0x08, eth(A, B)))
put("frame_parse", "drops",
    rec(0, eth(B, A)[:13]) + rec(0, eth(B, A, 10)) + rec(2, eth(B, A, 30)) + rec(0, b"\xff" * 6 + b"\x03" + b"\0" * 5 + b"\x08\x00")
    + rec(2, BCAST + A + b"\x88\xa8\x00\x0a\x08\x00" + b"\0" * 40) + rec(0x80, eth(B, A)))
put("frame_parse", "aging_tso_trunk",
    rec(4, eth(BCAST, A, 10)) + rec(0x18 | 0x20, eth(A, B)) + rec(0x41, eth(A, B, size=200)) + rec(3, eth(B, A)))

# --- config_load ----------------------------------------------------------------
for name in ("default.toml", "nic-uplink.toml"):
    with open(os.path.join(ROOT, "configs", name)) as f:
        put("config_load", name, f.read())
put("config_load", "every_key.toml", """[switch]
pmd_cores = [2, 3]
main_core = 0
eal_args = ["--log-level=8"]
hugepages = "off"
memory_mb = 512
control_socket = "/tmp/vsw/ctl"
socket_dir = "/tmp/vsw"
state_file = "/tmp/vsw/state.json"
fdb_size = 64
fdb_aging_secs = 60
vhost_retries = 0

[[port]]
name = "up"
type = "dpdk"
devargs = "net_null0"
rx_desc = 512
tx_desc = 2048
rx_queues = 2
rxq_pmd = [2, 3]
trunk = [10, 20]
mtu = 9000

[[port]]
name = "vm"
type = "vhost-user"
mode = "server"
path = "vm.sock"
owner = "root"
group = "kvm"
permissions = "0660"
datapath = "copy-once"
vlan = 10
offloads = false
mac_limit = 8
""")

# --- control_protocol -------------------------------------------------------------
put("control_protocol", "show_ports", json.dumps({"version": 1, "command": "show-ports"}))
put("control_protocol", "show_pmd_rxq", json.dumps({"version": 1, "command": "show-pmd-rxq"}))
put("control_protocol", "port_del", json.dumps({"version": 1, "command": "port-del", "name": "vm2"}))
put("control_protocol", "port_add_vhost", json.dumps({"version": 1, "command": "port-add", "port": {
    "name": "vm3", "type": "vhost-user", "mode": "server", "path": "vm3.sock", "datapath": "copy-once",
    "vlan": 10, "permissions": "0660", "mac_limit": 16, "offloads": False}}))
put("control_protocol", "port_add_dpdk", json.dumps({"version": 1, "command": "port-add", "port": {
    "name": "nic1", "type": "dpdk", "devargs": "0000:01:00.0", "rx_queues": 1, "rxq_pmd": [1], "trunk": [10, 20], "mtu": 9000}}))
put("control_protocol", "old_version", json.dumps({"version": 2, "command": "fdb-flush"}))
