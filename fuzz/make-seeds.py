#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/ (run from anywhere; idempotent).

Seeds are small, valid inputs in each target's input layout (see the comment
at the top of each fuzz/Targets/*.swift); the fuzzer mutates from there.
"""
import json, os, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# --- vhost-user-reader: mode byte, then front-end messages -------------------
def msg(req, payload=b"", flags=1):
    return struct.pack("<III", req, flags, len(payload)) + payload

u64 = lambda v: struct.pack("<Q", v)
state = lambda i, n: struct.pack("<II", i, n)
region = lambda gpa, size, ua, off: struct.pack("<QQQQ", gpa, size, ua, off)
memtable = struct.pack("<II", 1, 0) + region(0, 64 << 20, 0x7f0000000000, 0)
vaddr = struct.pack("<IIQQQQ", 0, 0, 0x7f0000001000, 0x7f0000003000, 0x7f0000002000, 0)
config = struct.pack("<III", 0, 57, 0) + bytes(57)
inflight = struct.pack("<QQHH", 4096, 0, 1, 128) + bytes(4)
startup = b"".join([
    msg(1), msg(15), msg(16, u64(0x1a0b)), msg(17), msg(3), msg(24, config),
    msg(2, u64(0x1_3000_0e56)), msg(31, inflight), msg(32, inflight),
    msg(5, memtable, flags=9), msg(13, u64(0)), msg(8, state(0, 128)), msg(10, state(0, 0)),
    msg(9, vaddr), msg(12, u64(0)), msg(18, state(0, 1)),
])
seeds = {
    "get-features": (0x00, msg(1)),
    "set-features": (0x00, msg(2, u64(1 << 32))),
    "mem-table-with-fd": (0x10, msg(5, memtable)),
    "vring-addr": (0x00, msg(9, vaddr)),
    "vring-kick-fd": (0x10, msg(12, u64(0))),
    "vring-kick-nofd": (0x00, msg(12, u64(0x100))),
    "get-config": (0x00, msg(24, config)),
    "set-config": (0x00, msg(25, struct.pack("<III", 32, 1, 0) + b"\x01")),
    "inflight": (0x10, msg(32, inflight)),
    "add-mem-reg": (0x10, msg(37, u64(0) + region(0x100000, 1 << 20, 0x7f0000100000, 0))),
    "rem-mem-reg": (0x00, msg(38, u64(0) + region(0x100000, 1 << 20, 0x7f0000100000, 0))),
    "log-base": (0x10, msg(6, u64(4096) + u64(0))),
    "iotlb-raw": (0x00, msg(22, bytes(64))),
    "qemu-startup-whole": (0x00, startup),
    "qemu-startup-dribbled": (0x13, startup),
    "qemu-startup-chunks-of-7": (0x27, startup),
}
for name, (mode, data) in seeds.items():
    write("vhost-user-reader", name, bytes([mode]) + data)

# --- descriptor-chain: 32-byte header, then region 0 (gpa 0x1000) ------------
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
def desc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)

def blk_header(t, sector):
    return struct.pack("<IIQ", t, 0, sector)

def queue_seed(chains, qlog=3, event_idx=False, extra=(), last_avail=0, iov=63, indirect_tables=()):
    """chains: list of lists of (offset_in_region, len, flags, next); heads are first indices."""
    qsize = 1 << qlog
    region = bytearray(16 << 10)
    descs, heads = [], []
    for chain in chains:
        heads.append(len(descs))
        base = len(descs)
        for i, (off, ln, fl, nxt) in enumerate(chain):
            descs.append(desc(0x1000 + off, ln, fl, base + nxt if fl & F_NEXT else 0))
    for i, d in enumerate(descs):
        region[16 * i:16 * i + 16] = d
    avail = 16 * qsize
    struct.pack_into("<HH", region, avail, 0, (last_avail + len(heads)) & 0xffff)
    for i, h in enumerate(heads):
        struct.pack_into("<H", region, avail + 4 + 2 * ((last_avail + i) % qsize), h)
    # Payload area from 0x800: request headers and data.
    for off, data in indirect_tables:
        region[off:off + len(data)] = data
    hdr = bytearray(32)
    hdr[0] = (1 if event_idx else 0) | (len(extra) << 1)
    hdr[1] = qlog
    struct.pack_into("<HB", hdr, 2, last_avail, iov)
    for i, (gpa, size, fill) in enumerate(extra):
        struct.pack_into("<IHH", hdr, 8 + 8 * i, gpa, size - 1, fill)
    return bytes(hdr), region

def place(region, off, data):
    region[off:off + len(data)] = data

def dc(name, chains, payloads, **kw):
    hdr, region = queue_seed(chains, **kw)
    for off, data in payloads:
        place(region, off, data)
    # Trim trailing zeros: the harness pads with zeros.
    body = bytes(region).rstrip(b"\0")
    write("descriptor-chain", name, hdr + body)

dc("out-in-flush", [
    [(0x800, 16, F_NEXT, 1), (0x1000, 512, F_NEXT, 2), (0x900, 1, F_WRITE, 0)],
    [(0x810, 16, F_NEXT, 1), (0x1400, 512, F_NEXT | F_WRITE, 2), (0x901, 1, F_WRITE, 0)],
    [(0x820, 16, F_NEXT, 1), (0x902, 1, F_WRITE, 0)],
], [(0x800, blk_header(1, 8)), (0x810, blk_header(0, 8)), (0x820, blk_header(4, 0))])
dc("get-id-discard", [
    [(0x800, 16, F_NEXT, 1), (0x1000, 20, F_NEXT | F_WRITE, 2), (0x900, 1, F_WRITE, 0)],
    [(0x810, 16, F_NEXT, 1), (0x1100, 32, F_NEXT, 2), (0x901, 1, F_WRITE, 0)],
], [(0x800, blk_header(8, 0)), (0x810, blk_header(11, 0)),
    (0x1100, struct.pack("<QII", 0, 8, 1) + struct.pack("<QII", 64, 8, 0))])
indirect = desc(0x1800, 16, F_NEXT, 1) + desc(0x2000, 1024, F_NEXT | F_WRITE, 2) + desc(0x1900, 1, F_WRITE, 0)
dc("indirect-in", [[(0xc00, len(indirect), F_INDIRECT, 0)]],
   [(0xc00, indirect), (0x1800, blk_header(0, 16))], event_idx=True)
dc("header-split-status-in-data", [
    [(0x800, 8, F_NEXT, 1), (0x808, 8, F_NEXT, 2), (0x1000, 513, F_WRITE, 0)],
], [(0x800, blk_header(0, 1))], last_avail=0xfffe, qlog=4)
dc("extra-region", [
    [(0x800, 16, F_NEXT, 1), (0x10000 - 0x1000, 4096, F_NEXT, 2), (0x900, 1, F_WRITE, 0)],
], [(0x800, blk_header(1, 0))], extra=[(0x10000, 4096, 0x5a)])

# --- packed-chain: 32-byte header, then region 0 (gpa 0x1000) ----------------
F_AVAIL, F_USED = 1 << 7, 1 << 15
def pdesc(addr, length, id_, flags):
    return struct.pack("<QIHH", addr, length, id_, flags)

def pc(name, chains, payloads, qsize=8, event_idx=False, base=0x8000, reverse=False, iov=63):
    """chains: lists of (offset_in_region, len, flags), made available from ring base `base`
    (bits 0-14 index, bit 15 wrap counter) with NEXT on all but the last; IDs 0, 1, ..."""
    region = bytearray(16 << 10)
    idx, wrap = base & 0x7fff, base >> 15
    for n, chain in enumerate(chains):
        for k, (off, ln, fl) in enumerate(chain):
            f = fl | (F_NEXT if k < len(chain) - 1 else 0) | (F_AVAIL if wrap else F_USED)
            region[16 * idx:16 * idx + 16] = pdesc(0x1000 + off, ln, n, f)
            idx += 1
            if idx == qsize:
                idx, wrap = 0, wrap ^ 1
    for off, data in payloads:
        place(region, off, data)
    hdr = bytearray(32)
    hdr[0] = (1 if event_idx else 0) | (8 if reverse else 0)
    struct.pack_into("<HHB", hdr, 1, qsize - 1, base, iov)
    write("packed-chain", name, bytes(hdr) + bytes(region).rstrip(b"\0"))

# Payload area from 0x800 (the ring and the event areas after it end below 0x210).
pc("out-in-flush", [
    [(0x800, 16, 0), (0x1000, 512, 0), (0x900, 1, F_WRITE)],
    [(0x810, 16, 0), (0x1200, 512, F_WRITE), (0x901, 1, F_WRITE)],
    [(0x820, 16, 0), (0x902, 1, F_WRITE)],
], [(0x800, blk_header(1, 8)), (0x810, blk_header(0, 8)), (0x820, blk_header(4, 0))])
pc("across-the-end-out-of-order", [
    [(0x800, 16, 0), (0x1000, 512, F_WRITE), (0x900, 1, F_WRITE)],
    [(0x810, 16, 0), (0x1200, 512, F_WRITE), (0x901, 1, F_WRITE)],
], [(0x800, blk_header(0, 0)), (0x810, blk_header(0, 1))], qsize=5, base=0x0003, reverse=True)
# Table entries hold guest addresses: region offset + 0x1000.
pindirect = pdesc(0x2800, 16, 0, 0) + pdesc(0x2000, 1024, 0, F_WRITE) + pdesc(0x2900, 1, 0, F_WRITE)
pc("indirect-in", [[(0xc00, len(pindirect), F_INDIRECT)]],
   [(0xc00, pindirect), (0x1800, blk_header(0, 16))], event_idx=True)

# --- blk-request: count, readable, lengths-1, contents ------------------------
def br(name, segs, readable):
    data = bytes([len(segs) - 1, readable]) + bytes(len(s) - 1 for s in segs) + b"".join(segs)
    write("blk-request", name, data)

br("out", [blk_header(1, 0), bytes(range(256)), b"\xff"], 2)
br("in", [blk_header(0, 7), bytes(256), bytes(256), b"\xff"], 1)
br("in-status-in-data", [blk_header(0, 0)[:8], blk_header(0, 0)[8:], bytes(129)], 2)
br("flush", [blk_header(4, 0), b"\xff"], 1)
br("get-id", [blk_header(8, 0), bytes(20), b"\xff"], 1)
br("discard", [blk_header(11, 0) + struct.pack("<QII", 0, 8, 1), b"\xff"], 1)
br("write-zeroes", [blk_header(13, 0), struct.pack("<QII", 8, 8, 0) * 2, b"\xff"], 2)

# --- json-rpc: chunk byte, then a client's stream -----------------------------
def req(method, params=None, id=1):
    r = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        r["params"] = params
    return r

rpc = {
    "version": (0, json.dumps(req("spdk_get_version"))),
    "pretty-back-to-back": (7, json.dumps(req("bdev_get_bdevs"), indent=2) +
                            json.dumps(req("rpc_get_methods", id="two"), indent=2)),
    "notification": (0, json.dumps({"jsonrpc": "2.0", "method": "bdev_null_create",
                                    "params": {"name": "N0", "num_blocks": 8, "block_size": 512}})),
    "create-controller": (3, json.dumps(req("vhost_create_blk_controller",
                                            {"ctrlr": "vhost.0", "dev_name": "M0", "cpumask": "0x1"}, id=42))),
    "escapes-and-numbers": (1, '{"jsonrpc":"2.0","method":"x\\u00e9\\n","id":-1.5e3,"params":[true,false,null,0,-0.0,1e-5,"\\ud83d\\ude00"]}'),
    "batch": (0, json.dumps([req("spdk_get_version"), req("bdev_get_bdevs", id=2)])),
    "malformed": (0, '{"jsonrpc":"2.0","method":]'),
}
for name, (chunk, text) in rpc.items():
    write("json-rpc", name, bytes([chunk]) + text.encode())
