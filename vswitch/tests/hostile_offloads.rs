//! A hostile guest's offloads on a copy-once port: this test speaks
//! vhost-user itself (rust-vmm's frontend, as `hostile_frontend.rs` does),
//! negotiates checksum and TSO offloads, indirect descriptors and
//! EVENT_IDX, and transmits virtio-net headers that lie about their frames
//! and indirect tables no driver would write. Each one goes back to it
//! empty and is counted once, by reason, in `show ports`; nothing of it is
//! forwarded. Its well-formed TSO frames (20 KB, MSS 1448) reach guests
//! that took no offload (net_virtio_user asks for none unless configured
//! to) as MTU-sized TCP segments with their checksums, the payload intact,
//! on both datapaths; its interrupts follow its `used_event`; and the two
//! well-behaved guests keep forwarding.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::frontend::*;
use common::*;
use testbed::wait_until;

const MEM: u64 = 4 << 20;
const SIZE: u16 = 256;

// virtio-net feature bits (VIRTIO 1.1 5.1.3).
const CSUM: u64 = 1 << 0;
/// GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN.
const GUEST_OFFLOADS: u64 = 1 << 1 | 1 << 7 | 1 << 8 | 1 << 9;
const HOST_TSO4: u64 = 1 << 11;
const HOST_TSO6: u64 = 1 << 12;
const HOST_ECN: u64 = 1 << 13;
const BASE: u64 = VERSION_1 | PROTOCOL_FEATURES | INDIRECT_DESC | EVENT_IDX;
const ALL: u64 = BASE | CSUM | GUEST_OFFLOADS | HOST_TSO4 | HOST_TSO6 | HOST_ECN;

// The virtio-net header (VIRTIO 1.1 5.1.6).
const NEEDS_CSUM: u8 = 1;
const TCPV4: u8 = 1;
const UDP: u8 = 3;
const TCPV6: u8 = 4;
const ECN: u8 = 0x80;

/// The frames' headers: Ethernet, IPv4 (20) or IPv6 (40), TCP with a
/// timestamp option (32), as Linux sends them.
const TCP_HLEN: usize = 32;
const HLEN4: usize = 14 + 20 + TCP_HLEN;
const MSS: u16 = 1448;
const IP_ID: u16 = 0x4242;
const SEQ: u32 = 0xfff0_0000;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const EVIL: [u8; 6] = [0x02, 0, 0, 0, 0, 7];

/// The hostile guest, its transmit queue driven by hand: every chain takes
/// the next slot of the descriptor table as its head (with EVENT_IDX each
/// ring has 2 more bytes, still inside the layout).
fn connect(sock: &Path, features: u64) -> Guest {
    Guest::connect(sock, shared_memory(&[(0, MEM as usize)]), Setup { size: SIZE, features, ..Setup::default() })
}

impl Guest {
    /// Makes the chain whose head descriptor is `d` available on the
    /// transmit queue; returns its head.
    fn send_chain(&mut self, d: Desc) -> u16 {
        let head = self.avail[TX] % SIZE;
        self.desc(TX, head, d);
        self.offer(TX, head);
        head
    }

    /// Header and frame in one buffer.
    fn send(&mut self, hdr: [u8; HDR], frame: &[u8]) -> u16 {
        let at = self.put(&[&hdr[..], frame].concat());
        self.send_chain((at, (HDR + frame.len()) as u32, 0, 0))
    }

    /// A chain that is the table `entries`, from an INDIRECT head.
    fn send_indirect(&mut self, entries: &[Desc]) -> u16 {
        let t = self.put(&descs(entries));
        self.send_chain((t, 16 * entries.len() as u32, INDIRECT, 0))
    }

    /// Waits until every chain offered is back; the last one's used entry.
    fn returned(&self) -> (u32, u32) {
        let offered = self.avail[TX];
        wait_until(DEADLINE, "chains back", || (self.used_idx(TX) == offered).then_some(()))
            .unwrap_or_else(|e| panic!("{e}: used idx {}, offered {offered}", self.used_idx(TX)));
        self.used(TX, offered.wrapping_sub(1))
    }
}

/// A virtio-net header; `hdr_len` is a hint the switch ignores.
fn vnet(flags: u8, gso_type: u8, gso_size: u16, csum_start: u16, csum_offset: u16) -> [u8; HDR] {
    let mut h = [0u8; HDR];
    h[0] = flags;
    h[1] = gso_type;
    for (i, v) in [(2, HLEN4 as u16), (4, gso_size), (6, csum_start), (8, csum_offset)] {
        h[i..i + 2].copy_from_slice(&v.to_le_bytes());
    }
    h
}

/// What Linux writes for an IPv4 TSO frame.
fn tso(gso_size: u16) -> [u8; HDR] {
    vnet(NEEDS_CSUM, TCPV4, gso_size, 34, 16)
}

fn ones_sum(b: &[u8]) -> u64 {
    b.chunks(2).map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// `n` bytes that repeat no short pattern.
fn payload(n: usize, seed: u64) -> Vec<u8> {
    (0..n as u64).map(|i| ((i ^ (seed << 20)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8).collect()
}

/// A TCP header (ACK|PSH, timestamps) whose checksum field holds the
/// pseudo-header sum over `addrs` (source and destination), as a guest
/// leaves it for NEEDS_CSUM.
fn tcp_header(addrs: &[u8], l4_len: usize) -> Vec<u8> {
    let mut t = [&40000u16.to_be_bytes()[..], &80u16.to_be_bytes(), &SEQ.to_be_bytes(), &1u32.to_be_bytes()].concat();
    t.extend([((TCP_HLEN / 4) << 4) as u8, ACK | PSH, 0x01, 0xf6, 0, 0, 0, 0]);
    t.extend([1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78]);
    let pseudo = fold(ones_sum(addrs) + 6 + l4_len as u64);
    t[16..18].copy_from_slice(&pseudo.to_be_bytes());
    t
}

fn set_ip_csum(f: &mut [u8]) {
    f[24..26].fill(0);
    let c = !fold(ones_sum(&f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Ethernet, IPv4 (DF), TCP from the hostile guest to `dst`.
fn tcp4(dst: [u8; 6], data: &[u8]) -> Vec<u8> {
    let l4_len = TCP_HLEN + data.len();
    let addrs = [10, 0, 0, 7, 10, 0, 0, 1];
    let mut f =
        [&dst[..], &EVIL, &[0x08, 0x00, 0x45, 0], &((20 + l4_len) as u16).to_be_bytes(), &IP_ID.to_be_bytes(), &[0x40, 0, 64, 6, 0, 0], &addrs].concat();
    set_ip_csum(&mut f);
    f.extend(tcp_header(&addrs, l4_len));
    f.extend_from_slice(data);
    f
}

/// Ethernet, IPv6, TCP.
fn tcp6(dst: [u8; 6], data: &[u8]) -> Vec<u8> {
    let l4_len = TCP_HLEN + data.len();
    let addrs: Vec<u8> = [[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7], [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]].concat();
    let mut f = [&dst[..], &EVIL, &[0x86, 0xdd, 0x60, 0, 0, 0], &(l4_len as u16).to_be_bytes(), &[6, 64], &addrs].concat();
    f.extend(tcp_header(&addrs, l4_len));
    f.extend_from_slice(data);
    f
}

/// Where `f`'s TCP header starts, and its payload.
fn l4_and_payload(f: &[u8]) -> (usize, usize) {
    let l4 = if f[12..14] == [0x86, 0xdd] { 14 + 40 } else { 14 + 20 };
    (l4, l4 + TCP_HLEN)
}

/// `segs` are the TSO frame `orig` cut at `mss`, as a receiver that took
/// no offload must get them: IP lengths (and IPv4 ids and checksums),
/// sequence numbers and TCP checksums right, PSH on the last only, the
/// payload intact and in order.
fn check_segments(orig: &[u8], segs: &[Vec<u8>], mss: u16, what: &str) {
    let (l4, hl) = l4_and_payload(orig);
    let (v6, mss, data) = (l4 == 54, mss as usize, &orig[hl..]);
    assert_eq!(segs.len(), data.len().div_ceil(mss).max(1), "{what}: segments of {} bytes: {:?}", orig.len(), segs.iter().map(Vec::len).collect::<Vec<_>>());
    for (k, s) in segs.iter().enumerate() {
        let part = &data[k * mss..((k + 1) * mss).min(data.len())];
        let last = k + 1 == segs.len();
        assert!(s.len() == hl + part.len() && s.len() <= 1514, "{what}: segment {k}: {} bytes", s.len());
        assert!(s[hl..] == *part, "{what}: segment {k}: payload bytes differ");
        let (ip, tcp) = (&s[14..l4], &s[l4..hl]);
        assert_eq!(s[..14], orig[..14], "{what}: segment {k}: Ethernet header");
        if v6 {
            assert_eq!(be16(ip, 4) as usize, s.len() - l4, "{what}: segment {k}: IPv6 payload length");
            assert_eq!((&ip[..4], &ip[6..]), (&orig[14..18], &orig[20..l4]), "{what}: segment {k}: IPv6 fields");
        } else {
            assert_eq!((be16(ip, 2) as usize, be16(ip, 4)), (s.len() - 14, IP_ID.wrapping_add(k as u16)), "{what}: segment {k}: IP length, id");
            assert_eq!((&ip[6..10], &ip[12..]), (&orig[20..24], &orig[26..l4]), "{what}: segment {k}: IPv4 fields");
            assert_eq!(fold(ones_sum(ip)), 0xffff, "{what}: segment {k}: IPv4 header checksum");
        }
        let seq = u32::from_be_bytes(tcp[4..8].try_into().unwrap());
        assert_eq!(seq, SEQ.wrapping_add((k * mss) as u32), "{what}: segment {k}: sequence number");
        assert_eq!(tcp[13], if last { ACK | PSH } else { ACK }, "{what}: segment {k}: TCP flags");
        let o = &orig[l4..hl];
        assert_eq!((&tcp[..4], &tcp[8..13], &tcp[14..16], &tcp[18..]), (&o[..4], &o[8..13], &o[14..16], &o[18..]), "{what}: segment {k}: TCP fields");
        let addrs = if v6 { &ip[8..40] } else { &ip[12..20] };
        let pseudo = ones_sum(addrs) + 6 + (s.len() - l4) as u64;
        assert_eq!(fold(pseudo + ones_sum(&s[l4..])), 0xffff, "{what}: segment {k}: TCP checksum");
    }
}

/// A switch with the hostile guest's port `evil` and two well-behaved
/// guests (net_virtio_user): vms[0] on copy-once, MAC 1; vms[1] on
/// rte_vhost, MAC 2. The hostile guest is the caller's (`Guest`).
struct Scene {
    vms: Vec<Vm>,
    sw: Switchd,
    idle: u32,
    seq: u32,
    /// The hostile guest's refusals expected so far, by reason.
    want: BTreeMap<String, u64>,
    dir: tempfile::TempDir,
}

/// The port's drops that count its own transmissions (not the broadcasts
/// it had no receive buffer for).
fn refusals(sw: &Switchd) -> BTreeMap<String, u64> {
    let mut d = sw.port("evil").drops;
    d.retain(|r, _| !["tx_full", "port_down", "no_mbuf"].contains(&r.as_str()));
    d
}

impl Scene {
    fn start(names: [&str; 2], features: u64) -> (Scene, Guest) {
        let dir = tempfile::tempdir().unwrap();
        let ports = server_port("evil", "copy-once") + &server_port(names[0], "copy-once") + &server_port(names[1], "rte_vhost");
        let sw = Switchd::start(dir.path(), "", &ports);
        let mut vms: Vec<Vm> = names.iter().map(|n| Vm::connect(n, &dir.path().join(format!("{n}.sock")), false, 1500)).collect();
        let g = connect(&dir.path().join("evil.sock"), features);
        sw.wait_ports("all three guests up", |ps| ps.iter().all(|p| p.state == "up"));
        let idle = sw.mempool_in_use();
        for v in [0usize, 1] {
            vms[v].send(&[frame(BCAST, mac(1 + v as u8), None, 60, 0)]);
            vms[1 - v].recv(1);
        }
        let want = refusals(&sw);
        let mut s = Scene { vms, sw, idle, seq: 0, want, dir };
        s.still_forwarding();
        (s, g)
    }

    /// vms[0] and vms[1] still reach each other, unicast both ways.
    fn still_forwarding(&mut self) {
        self.seq += 1;
        let f = frame(mac(2), mac(1), None, 300, self.seq);
        self.vms[0].send(std::slice::from_ref(&f));
        assert_eq!(self.vms[1].recv(1), [f], "vms[0] -> vms[1], step {}", self.seq);
        let g = frame(mac(1), mac(2), None, 1400, self.seq);
        self.vms[1].send(std::slice::from_ref(&g));
        assert_eq!(self.vms[0].recv(1), [g], "vms[1] -> vms[0], step {}", self.seq);
    }

    /// The chain `head` came back empty, counted once under `reason` and
    /// nothing else, and reached no one.
    fn refused(&mut self, g: &Guest, head: u16, reason: &str, what: &str) {
        assert_eq!(g.returned(), (head as u32, 0), "{what}: the chain back, empty");
        *self.want.entry(reason.to_string()).or_default() += 1;
        let want = &self.want;
        wait_until(DEADLINE, what, || (refusals(&self.sw) == *want).then_some(()))
            .unwrap_or_else(|e| panic!("{e}: {what}: want {want:?}, have {:?}", refusals(&self.sw)));
        for v in &mut self.vms {
            assert!(v.drain().is_empty(), "{what}: forwarded to {}", v.name);
        }
    }

    /// The chain `head` carried a frame that reached `vms[v]` as `want`.
    fn forwarded(&mut self, g: &Guest, head: u16, v: usize, want: &[u8], what: &str) {
        assert_eq!(self.vms[v].recv(1), [want], "{what}");
        assert_eq!(g.returned(), (head as u32, 0), "{what}: the chain back");
    }

    /// The TSO (or checksum-only) frame `f` reached each of `vms[to]` cut
    /// at `mss` (whole, its checksum finished).
    fn cut(&mut self, g: &Guest, head: u16, to: &[usize], f: &[u8], mss: u16, what: &str) {
        let n = (f.len() - l4_and_payload(f).1).div_ceil(mss as usize).max(1);
        for &v in to {
            check_segments(f, &self.vms[v].recv(n), mss, what);
        }
        assert_eq!(g.returned(), (head as u32, 0), "{what}: the chain back");
        assert_eq!(refusals(&self.sw), self.want, "{what}: nothing refused");
    }

    fn reconnect(&mut self, g: Guest, features: u64) -> Guest {
        drop(g);
        self.sw.wait_ports("evil gone", |ps| ps.iter().any(|p| p.name == "evil" && p.state == "waiting"));
        let g = connect(&self.dir.path().join("evil.sock"), features);
        self.sw.wait_ports("evil back", |ps| ps.iter().all(|p| p.state == "up"));
        g
    }

    /// The hostile guest leaves; the switch is whole and its pool idle.
    fn finish(mut self, g: Guest) {
        drop(g);
        self.sw.wait_ports("evil gone", |ps| ps.iter().any(|p| p.name == "evil" && p.state == "waiting"));
        self.still_forwarding();
        assert_eq!(refusals(&self.sw), self.want, "no refusal counted late or twice");
        self.sw.wait_ports("mempool back to idle", |_| self.sw.mempool_in_use() == self.idle);
    }
}

/// Every header the validator refuses, once each; correct TSO and
/// checksum requests served to guests without offloads.
#[test]
fn lying_virtio_net_headers_are_refused_by_reason_and_tso_frames_cut_for_guests_without_tso() {
    let (mut s, mut g) = Scene::start(["vm1", "vm2"], ALL);
    let evil = s.sw.port("evil").features;
    for f in ["csum", "guest_csum", "guest_tso4", "guest_tso6", "guest_ecn", "host_tso4", "host_tso6", "host_ecn", "indirect_desc", "event_idx"] {
        assert!(evil.iter().any(|n| n == f), "evil negotiated {f}: {evil:?}");
    }
    // net_virtio_user asks for offloads only as its port config does (no
    // rx offloads, tx_offloads false): the switch must cut for them.
    for vm in ["vm1", "vm2"] {
        let p = s.sw.port(vm);
        assert!(!p.features.iter().any(|f| f.contains("tso") || f.contains("csum")), "{vm} took no offload: {:?}", p.features);
    }

    // A correct 20 KB TSO frame to each: cut in the one copy into the
    // copy-once guest; materialized and cut in software for rte_vhost.
    let data = payload(20000, 1);
    for v in [0, 1] {
        let f = tcp4(mac(1 + v as u8), &data);
        let head = g.send(tso(MSS), &f);
        s.cut(&g, head, &[v], &f, MSS, "a 20 KB TSO frame");
        let f6 = tcp6(mac(1 + v as u8), &data);
        let head = g.send(vnet(NEEDS_CSUM, TCPV6, MSS - 20, 54, 16), &f6);
        s.cut(&g, head, &[v], &f6, MSS - 20, "a 20 KB TSO frame over IPv6");
        // A checksum request alone: finished by the switch.
        let small = tcp4(mac(1 + v as u8), &data[..1000]);
        let head = g.send(vnet(NEEDS_CSUM, 0, 0, 34, 16), &small);
        s.cut(&g, head, &[v], &small, MSS, "a partial checksum");
    }
    let head = g.send(vnet(NEEDS_CSUM, TCPV4 | ECN, MSS, 34, 16), &tcp4(mac(1), &data));
    s.cut(&g, head, &[0], &tcp4(mac(1), &data), MSS, "TCPV4|ECN with HOST_ECN");
    let flood = tcp4(BCAST, &data);
    let head = g.send(tso(MSS), &flood);
    s.cut(&g, head, &[0, 1], &flood, MSS, "a 20 KB TSO frame flooded");
    // The largest frame a chain may carry (64 KB with its header), and one
    // byte more: the chain is refused for its length before any header
    // check, so `hdr_too_long` cannot be reached from a copy-once guest.
    for v in [0, 1] {
        let biggest = tcp4(mac(1 + v as u8), &payload(65536 - HLEN4, 2));
        let head = g.send(tso(MSS), &biggest);
        s.cut(&g, head, &[v], &biggest, MSS, "a 64 KB TSO frame");
    }
    let head = g.send(tso(MSS), &tcp4(mac(1), &payload(65537 - HLEN4, 3)));
    s.refused(&g, head, "bad_length", "a frame one byte over 64 KB");
    s.still_forwarding();

    // Every way the header can lie, one at a time.
    let good = tcp4(mac(1), &payload(3000, 4));
    let v6 = tcp6(mac(1), &payload(3000, 5));
    let short = tcp4(mac(1), &payload(40, 6));
    let edit = |at: usize, v: u8| {
        let mut f = good.clone();
        f[at] = v;
        set_ip_csum(&mut f);
        f
    };
    let cases: [(&str, &str, [u8; HDR], Vec<u8>); 14] = [
        ("hdr_gso_size_zero", "gso_size 0", tso(0), good.clone()),
        ("hdr_gso_size_too_small", "gso_size 47", tso(47), good.clone()),
        ("hdr_gso_size_too_large", "a segment over 64 KB of IP", tso(65535 - 20 - TCP_HLEN as u16 + 1), good.clone()),
        ("hdr_csum_out_of_frame", "NEEDS_CSUM past the frame's end", vnet(NEEDS_CSUM, 0, 0, 34, short.len() as u16 - 34 - 1), short.clone()),
        ("hdr_csum_out_of_frame", "NEEDS_CSUM in the Ethernet header", vnet(NEEDS_CSUM, 0, 0, 12, 0), short),
        ("hdr_csum_out_of_frame", "NEEDS_CSUM past the frame's first 160 bytes", vnet(NEEDS_CSUM, 0, 0, 34, 150), good.clone()),
        ("hdr_unknown_gso_type", "gso_type UDP", vnet(NEEDS_CSUM, UDP, MSS, 34, 16), good.clone()),
        ("hdr_missing_csum", "GSO without NEEDS_CSUM", vnet(0, TCPV4, MSS, 34, 16), good.clone()),
        ("hdr_gso_not_tcp", "TCPV4 on an IPv6 frame", vnet(NEEDS_CSUM, TCPV4, MSS, 54, 16), v6.clone()),
        ("hdr_gso_not_tcp", "TCPV4 on UDP over IPv4", tso(MSS), edit(23, 17)),
        ("hdr_bad_headers", "an IPv4 total length one over the frame's", tso(MSS), edit(17, good[17].wrapping_add(1))),
        ("hdr_bad_headers", "an IPv4 fragment (MF)", tso(MSS), edit(20, 0x20)),
        ("hdr_bad_headers", "NEEDS_CSUM not at the TCP checksum", vnet(NEEDS_CSUM, TCPV4, MSS, 34, 6), good.clone()),
        // Segments of 66 + 1453 bytes: over the MTU (1500 + 18).
        ("oversize", "an MSS the port's MTU cannot carry", tso(1453), good.clone()),
    ];
    for (reason, what, hdr, f) in cases {
        let head = g.send(hdr, &f);
        s.refused(&g, head, reason, what);
    }
    s.still_forwarding();

    // Without HOST_ECN and HOST_TSO6 (a second negotiation): the ECN bit,
    // and TSO over IPv6, are refused as not negotiated; TSO4 still works.
    let mut g = s.reconnect(g, BASE | CSUM | HOST_TSO4);
    let head = g.send(vnet(NEEDS_CSUM, TCPV4 | ECN, MSS, 34, 16), &good);
    s.refused(&g, head, "hdr_ecn_not_negotiated", "TCPV4|ECN without HOST_ECN");
    let head = g.send(vnet(NEEDS_CSUM, TCPV6, MSS, 54, 16), &v6);
    s.refused(&g, head, "hdr_offload_not_negotiated", "TCPV6 without HOST_TSO6");
    let head = g.send(tso(MSS), &good);
    s.cut(&g, head, &[0], &good, MSS, "a TSO frame after the renegotiation");
    s.finish(g);
}

/// Every malformed indirect table, once each; well-formed ones forwarded;
/// and EVENT_IDX honoured.
#[test]
fn malformed_indirect_tables_are_refused_by_reason_and_good_ones_forwarded() {
    let (mut s, mut g) = Scene::start(["vm3", "vm4"], ALL);
    let f = frame(mac(1), EVIL, None, 200, 1);
    let (h, b) = (g.put(&[0; HDR]), g.put(&f));
    let (hdr, body): (Desc, Desc) = ((h, HDR as u32, NEXT, 1), (b, f.len() as u32, 0, 0));

    let t = g.put(&descs(&[hdr, body]));
    let head = g.send_chain((t, 24, INDIRECT, 0));
    s.refused(&g, head, "bad_indirect", "a table 24 bytes long");
    let head = g.send_chain((t, 0, INDIRECT, 0));
    s.refused(&g, head, "bad_indirect", "a table 0 bytes long");
    let head = g.send_chain((MEM - 16, 32, INDIRECT, 0));
    s.refused(&g, head, "outside_memory", "a table across the end of guest memory");
    let head = g.send_chain((0x4000_0000, 32, INDIRECT, 0));
    s.refused(&g, head, "outside_memory", "a table outside guest memory");
    let head = g.send_indirect(&[(t, 32, INDIRECT, 0)]);
    s.refused(&g, head, "bad_indirect", "a table inside a table");
    let head = g.send_chain((t, 32, INDIRECT | NEXT, (g.avail[TX] + 1) % SIZE));
    s.refused(&g, head, "bad_indirect", "INDIRECT with NEXT");
    let head = g.send_indirect(&[(h, HDR as u32, NEXT, 2), body]);
    s.refused(&g, head, "bad_indirect", "a next beyond the table");
    let head = g.send_indirect(&[hdr, (b, 0, NEXT, 2), body]);
    s.refused(&g, head, "bad_length", "a zero-length descriptor in the table");
    let head = g.send_indirect(&[hdr, (b, 100, NEXT, 0)]);
    s.refused(&g, head, "chain_too_long", "a next loop inside the table");
    let mut many: Vec<Desc> = (0..65).map(|i| (b + i, 1, NEXT, i as u16 + 1)).collect();
    many[64].2 = 0;
    let head = g.send_indirect(&many);
    s.refused(&g, head, "chain_too_long", "a table of 65 descriptors");
    let head = g.send_indirect(&[hdr, (b, f.len() as u32, WRITE, 0)]);
    s.refused(&g, head, "wrong_direction", "a receive buffer in a transmit table");
    let head = g.send_indirect(&[hdr, (MEM - 100, 200, 0, 0)]);
    s.refused(&g, head, "outside_memory", "a buffer across the end of guest memory");
    s.still_forwarding();

    // Well-formed tables: header and frame apart; the frame in pieces up
    // to the cap of 64 descriptors; the table's own WRITE flag ignored.
    let head = g.send_indirect(&[hdr, (b, 100, NEXT, 2), (b + 100, f.len() as u32 - 100, 0, 0)]);
    s.forwarded(&g, head, 0, &f, "a frame in three buffers of a table");
    // The frame in `n` descriptors chained from table index `first` on.
    let split = |n: u16, first: u16| -> Vec<Desc> {
        let mut d: Vec<Desc> = (0..n).map(|i| (b + 3 * i as u64, 3, NEXT, first + i + 1)).collect();
        *d.last_mut().unwrap() = (b + 3 * (n as u64 - 1), f.len() as u32 - 3 * (n as u32 - 1), 0, 0);
        d
    };
    let head = g.send_indirect(&[&[hdr][..], &split(63, 1)].concat());
    s.forwarded(&g, head, 0, &f, "a frame in 64 descriptors");
    // A table may end a direct chain; the cap counts both.
    let tb = g.put(&descs(&[body]));
    g.desc(TX, SIZE - 1, (tb, 16, INDIRECT, 0));
    let head = g.send_chain((h, HDR as u32, NEXT, SIZE - 1));
    s.forwarded(&g, head, 0, &f, "a table after a direct descriptor");
    let t64 = g.put(&descs(&split(64, 0)));
    g.desc(TX, SIZE - 2, (t64, 64 * 16, INDIRECT, 0));
    let head = g.send_chain((h, HDR as u32, NEXT, SIZE - 2));
    s.refused(&g, head, "chain_too_long", "one direct descriptor and a table of 64");
    let head = g.send_chain((t, 32, INDIRECT | WRITE, 0));
    s.forwarded(&g, head, 0, &f, "a table whose own descriptor says WRITE");
    // A 20 KB TSO frame in a table: its header split off, its headers
    // across two buffers, its payload in 4 KB pieces; cut for each guest.
    let data = payload(20000, 7);
    for v in [0, 1] {
        let tf = tcp4(mac(1 + v as u8), &data);
        let at = g.put(&[&tso(MSS)[..], &tf].concat());
        let bounds: Vec<usize> = [0].into_iter().chain((40..tf.len()).step_by(4096)).chain([tf.len()]).collect();
        let mut table: Vec<Desc> = vec![(at, HDR as u32, NEXT, 1)];
        table.extend(bounds.windows(2).zip(2..).map(|(w, next)| (at + (HDR + w[0]) as u64, (w[1] - w[0]) as u32, NEXT, next)));
        table.last_mut().unwrap().2 = 0;
        let head = g.send_indirect(&table);
        s.cut(&g, head, &[v], &tf, MSS, "a TSO frame in a table");
    }

    // EVENT_IDX: the switch interrupts once its used index passes the
    // guest's used_event, not before.
    g.interrupted(TX);
    g.used_event(TX, g.avail[TX].wrapping_add(1));
    let head = g.send([0; HDR], &f);
    s.forwarded(&g, head, 0, &f, "a frame before used_event");
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_millis(200) {
        assert!(!g.interrupted(TX), "an interrupt before used_event");
    }
    let head = g.send([0; HDR], &f);
    s.forwarded(&g, head, 0, &f, "the frame at used_event");
    wait_until(DEADLINE, "an interrupt at used_event", || g.interrupted(TX).then_some(())).unwrap();
    s.finish(g);
}
