//! TSO frames through both vhost datapaths: a VM sends TCP segments of up
//! to 64 KB (virtio-net header: GSO TCPV4/TCPV6, gso_size = MSS,
//! NEEDS_CSUM) to VMs that did not negotiate GUEST_TSO, over a copy-once
//! port and over an rte_vhost port; the segments the switch cuts come out
//! byte-identical whichever datapath carried them, each a valid TCP segment
//! (IPv4 header and TCP checksums, lengths, ids, sequence numbers, flags)
//! no larger than the MTU, their payloads making up the original.
//!
//! Topology as in `copy_once_differential.rs`: VLAN 10 holds c1 (sender),
//! c2 (copy-once) and r3 (rte_vhost); VLAN 20 holds r1 (sender), r2
//! (rte_vhost) and c3 (copy-once), so flooding covers all four
//! sender/receiver datapath pairs and unicast (once learned) two of them.
//! Run twice, each in its own switch: receivers' ports with offloads on
//! (their VMs ask for none) and with `offloads = false`.
//!
//! The senders are net_virtio_user ports with TSO enabled (`tx_offloads`).
//! What DPDK 22.11's virtio PMD (`drivers/net/virtio/virtio_rxtx.c`) does
//! with a TSO mbuf: `virtio_xmit_pkts_prepare` (our `TxQueue` calls
//! `rte_eth_tx_prepare` when the device does TSO) runs
//! `rte_net_intel_cksum_prepare`, which overwrites the TCP checksum with the
//! pseudo-header sum *without* the length (`rte_ipv4_phdr_cksum` with
//! TX_TCP_SEG), then `virtio_tso_fix_cksum` adds the L4 length (pkt_len -
//! l2 - l3, as 32 bits) and recomputes the IPv4 header checksum: the field
//! ends up as Linux leaves it (folded pseudo-header sum with the length,
//! not complemented). The frames here carry that value already, so they
//! are right with or without the prepare step. `virtqueue_xmit_offload`
//! then writes NEEDS_CSUM, csum_start = l2 + l3, csum_offset = 16,
//! gso_type TCPV4 (TCPV6 if TX_IPV6), gso_size = tso_segsz, hdr_len =
//! l2 + l3 + l4; never GSO_ECN, so no CWR is sent here. HOST_TSO6 comes
//! with TCP_TSO, so IPv6 is tested too.
//!
//! Receiving whole segments (GUEST_TSO) is not tested: the virtio PMD asks
//! for GUEST_TSO4/6 only with `RTE_ETH_RX_OFFLOAD_TCP_LRO`
//! (`virtio_dev_configure`), which `pmd_bridge::PortConfig` cannot enable,
//! and `Mbuf` has no accessor for the RX flags (`RTE_MBUF_F_RX_LRO`) and
//! `tso_segsz` that `virtio_rx_offload` sets on such a frame.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use pmd_bridge::{tx_flags, Burst, EthPort, PortConfig, RxQueue, TxOffload, TxQueue};
use testbed::wait_until;

const MTU: usize = 1500;
const ETH: usize = 14;
/// TCP with the timestamp option (NOP, NOP, TS), as Linux sends it.
const TCP_HLEN: usize = 32;
/// MSS for a 1500-byte MTU with timestamps: 1500 - 20 - 32, 1500 - 40 - 32.
const MSS4: u16 = 1448;
const MSS6: u16 = 1428;

const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const CWR: u8 = 0x80;

const NAMES: [&str; 6] = ["c1", "c2", "r3", "r1", "r2", "c3"];

/// A port of the topology; the senders' (`*1`) always offer offloads, the
/// receivers' as `receiver_offloads` says.
fn port(name: &str, receiver_offloads: bool) -> String {
    let datapath = if name.starts_with('c') { "copy-once" } else { "rte_vhost" };
    let vlan = if ["c1", "c2", "r3"].contains(&name) { 10 } else { 20 };
    let offloads = receiver_offloads || name.ends_with('1');
    format!(
        "[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"{name}.sock\"\n\
         datapath = \"{datapath}\"\nvlan = {vlan}\noffloads = {offloads}\n"
    )
}

/// A VM whose virtio device does TSO and checksums on transmit.
struct TsoVm {
    name: String,
    // Queues before the port: fields drop in order.
    rx: RxQueue,
    tx: TxQueue,
    _port: EthPort,
}

impl TsoVm {
    /// With `lro`, the device also takes whole segments (GUEST_TSO).
    fn connect(name: &str, sock: &std::path::Path, lro: bool) -> TsoVm {
        let (eal, pool) = eal();
        let devargs = format!("net_virtio_user_{name},path={},queues=1,mrg_rxbuf=1", sock.display());
        let mut port = EthPort::open(eal, &devargs).expect("open virtio_user");
        let cfg = PortConfig { mtu: Some(MTU as u16), tx_offloads: true, rx_lro: lro, ..Default::default() };
        port.configure(&cfg, Arc::clone(pool)).unwrap();
        port.start().unwrap();
        let caps = port.tx_offload_caps();
        assert!(caps.tso && caps.tcp_csum, "{name}: the virtio device does TSO: {caps:?}");
        let (rx, tx) = (port.rx_queue(0).unwrap(), port.tx_queue(0).unwrap());
        TsoVm { name: name.to_string(), rx, tx, _port: port }
    }

    /// Sends one frame as a TSO request (one virtio-net frame with a GSO header).
    fn send_tso(&mut self, frame: &[u8], offload: TxOffload) {
        let mut m = pool().alloc_from(frame).expect("mbufs");
        assert!(m.set_tx_offload(offload));
        let mut b = Burst::<1>::new();
        b.push(m).unwrap();
        let start = Instant::now();
        while !b.is_empty() {
            self.tx.tx_burst(&mut b);
            assert!(start.elapsed() < DEADLINE, "{}: TSO frame not taken (tx_prepare refused it, or the ring is full)", self.name);
        }
    }

    /// How many frames arrived (and are dropped).
    fn drain(&mut self) -> usize {
        self.recv().len()
    }

    /// The frames that arrived.
    fn recv(&mut self) -> Vec<Vec<u8>> {
        let mut b = Burst::<32>::new();
        let mut got = Vec::new();
        while self.rx.rx_burst(&mut b) > 0 {
            got.extend(b.iter().map(|m| m.to_vec()));
            b.clear();
        }
        got
    }
}

/// One TSO frame: Ethernet, IPv4 (20 bytes, DF) or IPv6, TCP with
/// timestamps, `payload` bytes.
#[derive(Clone, Copy, Debug)]
struct Tso {
    v6: bool,
    payload: usize,
    mss: u16,
    seq: u32,
    ip_id: u16,
    flags: u8,
}

impl Tso {
    fn l3(&self) -> usize {
        if self.v6 {
            40
        } else {
            20
        }
    }

    fn hdr_len(&self) -> usize {
        ETH + self.l3() + TCP_HLEN
    }

    fn segments(&self) -> usize {
        self.payload.div_ceil(usize::from(self.mss))
    }

    fn payload_byte(&self, i: usize) -> u8 {
        let x = (i as u32).wrapping_mul(0x9e37_79b1) ^ self.seq.rotate_left(7) ^ self.payload as u32;
        (x >> 13) as u8
    }

    fn frame(&self, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::with_capacity(self.hdr_len() + self.payload);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        let l4_len = TCP_HLEN + self.payload;
        let pseudo = if self.v6 {
            let (s, d) = ([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1u8], [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2u8]);
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0x0a, 0xbc, 0xde]); // traffic class 0, a flow label
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[6, 64]);
            f.extend_from_slice(&s);
            f.extend_from_slice(&d);
            sum16(&[&s, &d]) + (l4_len as u32 >> 16) + (l4_len as u32 & 0xffff) + 6
        } else {
            let (s, d) = ([10, 0, 0, 1u8], [10, 0, 0, 2u8]);
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = [0x45, 0x00, 0, 0, 0, 0, 0x40, 0x00, 64, 6, 0, 0, s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]];
            ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
            let c = !fold(sum16(&[&ip]));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
            sum16(&[&s, &d]) + l4_len as u32 + 6
        };
        f.extend_from_slice(&0xc350u16.to_be_bytes()); // source port 50000
        f.extend_from_slice(&5201u16.to_be_bytes());
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.extend_from_slice(&0x1357_9bdfu32.to_be_bytes()); // ack
        f.extend_from_slice(&[((TCP_HLEN / 4) as u8) << 4, self.flags]);
        f.extend_from_slice(&501u16.to_be_bytes()); // window
        // What Linux leaves for CHECKSUM_PARTIAL: the pseudo-header sum.
        f.extend_from_slice(&fold(pseudo).to_be_bytes());
        f.extend_from_slice(&[0, 0]); // urgent pointer
        f.extend_from_slice(&[1, 1, 8, 10, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        f.extend((0..self.payload).map(|i| self.payload_byte(i)));
        f
    }

    fn offload(&self) -> TxOffload {
        let ip = if self.v6 { tx_flags::IPV6 } else { tx_flags::IPV4 };
        TxOffload {
            flags: tx_flags::TCP_SEG | tx_flags::TCP_CKSUM | ip,
            l2_len: ETH as u8,
            l3_len: self.l3() as u16,
            l4_len: TCP_HLEN as u8,
            tso_segsz: self.mss,
        }
    }
}

/// The ones' complement sum of the 16-bit big-endian words of `parts`
/// (each of even length), unfolded.
fn sum16(parts: &[&[u8]]) -> u32 {
    parts.iter().flat_map(|p| p.chunks(2)).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Every TSO frame sent: IPv4 at MSS 1448 across sizes (a single byte over
/// one segment, an exact multiple, 64 KB), sequence numbers and IP ids that
/// wrap, FIN on one; and IPv6.
fn cases() -> Vec<Tso> {
    let v4 = |payload, seq, ip_id, flags| Tso { v6: false, payload, mss: MSS4, seq, ip_id, flags };
    let v6 = |payload, seq| Tso { v6: true, payload, mss: MSS6, seq, ip_id: 0, flags: ACK | PSH };
    vec![
        v4(2000, 1000, 0x0100, ACK | PSH),
        v4(1449, 0x7fff_ffff, 0x0200, ACK | PSH),
        v4(2 * usize::from(MSS4), 5000, 0x0300, ACK),
        v4(9000, 0xffff_f000, 0xfffe, ACK | PSH),
        v4(30000, 123_456, 0x0400, ACK | PSH | FIN),
        v4(65000, 0xffff_8000, 0xffe0, ACK | PSH),
        v6(3000, 77),
        v6(30000, 0xffff_c000),
        v6(65000, 1),
    ]
}

/// Name of the header field at byte `off` of a segment of `t`.
fn field_at(t: &Tso, off: usize) -> String {
    const V4: [(usize, &str); 10] =
        [(0, "ver/ihl"), (1, "tos"), (2, "total length"), (4, "id"), (6, "flags/frag"), (8, "ttl"), (9, "protocol"), (10, "header checksum"), (12, "source"), (16, "destination")];
    const V6: [(usize, &str); 6] = [(0, "ver/class/flow"), (4, "payload length"), (6, "next header"), (7, "hop limit"), (8, "source"), (24, "destination")];
    const TCP: [(usize, &str); 10] = [(0, "sport"), (2, "dport"), (4, "seq"), (8, "ack"), (12, "data offset"), (13, "flags"), (14, "window"), (16, "checksum"), (18, "urgent"), (20, "options")];
    let find = |table: &[(usize, &'static str)], o: usize| table.iter().rev().find(|(at, _)| *at <= o).map_or("?", |f| f.1);
    let l4 = ETH + t.l3();
    if off < ETH {
        "Ethernet header".into()
    } else if off < l4 {
        format!("IP {}", find(if t.v6 { &V6 } else { &V4 }, off - ETH))
    } else if off < t.hdr_len() {
        format!("TCP {}", find(&TCP, off - l4))
    } else {
        format!("payload byte {}", off - t.hdr_len())
    }
}

/// What is wrong with `segs` as the segmentation of `sent` (a frame of `t`).
fn check(what: &str, t: &Tso, sent: &[u8], segs: &[Vec<u8>]) -> Vec<String> {
    let mut bad = Vec::new();
    if segs.len() != t.segments() {
        bad.push(format!("{what}: {} segments, want {}", segs.len(), t.segments()));
    }
    let (mss, l3, l4) = (usize::from(t.mss), ETH, ETH + t.l3());
    let mut payload = Vec::with_capacity(t.payload);
    for (k, seg) in segs.iter().enumerate() {
        let what = format!("{what} segment {k} ({} bytes)", seg.len());
        let mut err = |e: String| bad.push(format!("{what}: {e}"));
        if seg.len() > ETH + MTU {
            err(format!("larger than the MTU ({} bytes of IP)", seg.len() - ETH));
        }
        let p = match PacketHeaders::from_ethernet_slice(seg) {
            Ok(p) => p,
            Err(e) => {
                err(format!("does not parse: {e:?}"));
                continue;
            }
        };
        let Some(TransportHeader::Tcp(tcp)) = p.transport.clone() else {
            err("not TCP".into());
            continue;
        };
        let data = p.payload.slice();
        let last = k + 1 == t.segments();
        let want_len = if last { t.payload - k * mss } else { mss };
        if data.len() != want_len {
            err(format!("{} bytes of payload, want {want_len}", data.len()));
        }
        let want_csum = match &p.net {
            Some(NetHeaders::Ipv4(ip, _)) if !t.v6 => {
                if ip.header_checksum != ip.calc_header_checksum() {
                    err(format!("IPv4 header checksum {:#06x}, want {:#06x}", ip.header_checksum, ip.calc_header_checksum()));
                }
                if ip.identification != t.ip_id.wrapping_add(k as u16) {
                    err(format!("IP id {:#06x}, want {:#06x}", ip.identification, t.ip_id.wrapping_add(k as u16)));
                }
                if usize::from(ip.total_len) != seg.len() - ETH {
                    err(format!("IP total length {}", ip.total_len));
                }
                let same = [0..2, 6..10, 12..20].into_iter().all(|r| seg[l3..][r.clone()] == sent[l3..][r]);
                if !same {
                    err("IPv4 header fields other than length, id and checksum changed".into());
                }
                tcp.calc_checksum_ipv4(ip, data).ok()
            }
            Some(NetHeaders::Ipv6(ip, _)) if t.v6 => {
                if usize::from(ip.payload_length) != seg.len() - l4 {
                    err(format!("IPv6 payload length {}", ip.payload_length));
                }
                if seg[l3..l3 + 4] != sent[l3..l3 + 4] || seg[l3 + 6..l4] != sent[l3 + 6..l4] {
                    err("IPv6 header fields other than the length changed".into());
                }
                tcp.calc_checksum_ipv6(ip, data).ok()
            }
            other => {
                err(format!("wrong network header {other:?}"));
                None
            }
        };
        match want_csum {
            Some(w) if tcp.checksum == w || tcp.checksum == 0xffff && w == 0 => {}
            w => err(format!("TCP checksum {:#06x}, want {}", tcp.checksum, w.map_or("none".into(), |w| format!("{w:#06x}")))),
        }
        let want_seq = t.seq.wrapping_add((k * mss) as u32);
        if tcp.sequence_number != want_seq {
            err(format!("seq {:#x}, want {want_seq:#x}", tcp.sequence_number));
        }
        let flags = seg[l4 + 13];
        let mut want_flags = t.flags;
        if !last {
            want_flags &= !(FIN | PSH);
        }
        if k > 0 {
            want_flags &= !CWR;
        }
        if flags != want_flags {
            err(format!("TCP flags {flags:#04x}, want {want_flags:#04x}"));
        }
        // Ports, ack, data offset; window, urgent pointer, options.
        if seg[l4..l4 + 4] != sent[l4..l4 + 4] || seg[l4 + 8..l4 + 13] != sent[l4 + 8..l4 + 13] || seg[l4 + 14..l4 + 16] != sent[l4 + 14..l4 + 16] {
            err("TCP ports, ack, data offset or window changed".into());
        }
        if seg[l4 + 18..t.hdr_len()] != sent[l4 + 18..t.hdr_len()] {
            err("TCP urgent pointer or options changed".into());
        }
        if seg[..ETH] != sent[..ETH] {
            err("Ethernet header changed".into());
        }
        payload.extend_from_slice(data);
    }
    if payload != sent[t.hdr_len()..] {
        let at = payload.iter().zip(&sent[t.hdr_len()..]).position(|(a, b)| a != b).unwrap_or(payload.len().min(t.payload));
        bad.push(format!("{what}: the concatenated payloads ({} bytes) differ from what was sent ({}) from byte {at}", payload.len(), t.payload));
    }
    bad
}

/// Where the segment lists `a` and `b` first differ, if they do.
fn differ(t: &Tso, a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} segments against {}", a.len(), b.len()));
    }
    let (k, (x, y)) = a.iter().zip(b).enumerate().find(|(_, (x, y))| x != y)?;
    let Some(off) = x.iter().zip(y.iter()).position(|(p, q)| p != q) else {
        return Some(format!("segment {k}: {} bytes against {}", x.len(), y.len()));
    };
    let fields: Vec<String> =
        x.iter().zip(y.iter()).enumerate().filter(|(_, (p, q))| p != q).map(|(i, _)| field_at(t, i)).fold(Vec::new(), |mut v, f| {
            if v.last() != Some(&f) && v.len() < 8 {
                v.push(f);
            }
            v
        });
    Some(format!("segment {k} first differs at byte {off} ({}): {:#04x} against {:#04x}; fields differing: {fields:?}", field_at(t, off), x[off], y[off]))
}

/// Receives until `n` frames arrived, or a few seconds passed.
fn collect(vm: &mut Vm, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < n && start.elapsed() < Duration::from_secs(10) {
        got.extend(vm.drain());
    }
    got
}

/// Receives until `last` arrived (included), or a few seconds passed.
fn collect_until(vm: &mut Vm, last: &[u8]) -> Vec<Vec<u8>> {
    let mut got: Vec<Vec<u8>> = Vec::new();
    let start = Instant::now();
    while got.last().is_none_or(|f| f != last) && start.elapsed() < Duration::from_secs(10) {
        got.extend(vm.drain());
    }
    got
}

#[test]
fn both_datapaths_cut_tso_frames_alike_for_a_guest_without_tso() {
    scenario(true, "a");
}

/// The same with the receivers' ports at `offloads = false`.
#[test]
fn both_datapaths_cut_tso_frames_alike_for_a_port_without_offloads() {
    scenario(false, "b");
}

/// The VMs' devices are named `<port><tag>`, distinct across tests.
fn scenario(receiver_offloads: bool, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ports: String = NAMES.iter().map(|&n| port(n, receiver_offloads)).collect();
    let sw = Switchd::start(dir.path(), "", &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let vm = |n: &str| format!("{n}{tag}");
    let mut senders = [TsoVm::connect(&vm("c1"), &sock("c1"), false), TsoVm::connect(&vm("r1"), &sock("r1"), false)];
    // c2, r3 (VLAN 10); r2, c3 (VLAN 20).
    let mut rcv: Vec<Vm> = ["c2", "r3", "r2", "c3"].iter().map(|&n| Vm::connect(&vm(n), &sock(n), false, MTU as u16)).collect();
    let has = |p: &vswitch::protocol::PortInfo, f: &str| p.features.iter().any(|x| x == f);
    sw.wait_ports("guests up, offloads negotiated", |ps| {
        ps.iter().all(|p| p.state == "up") && ps.iter().filter(|p| p.name.ends_with('1')).all(|p| has(p, "host_tso4") && has(p, "host_tso6") && has(p, "csum"))
    });
    for p in sw.ports().iter().filter(|p| !p.name.ends_with('1')) {
        assert!(!has(p, "guest_tso4") && !has(p, "guest_tso6") && !has(p, "guest_csum"), "receivers take no offloads: {p:?}");
    }
    let idle = sw.mempool_in_use();
    let cases = cases();
    let mut bad = Vec::new();

    // Flood (mac(2) unknown): c1 -> c2, r3 and r1 -> r2, c3.
    let mut flooded = Vec::new();
    for (i, t) in cases.iter().enumerate() {
        let f = t.frame(mac(2), mac(1));
        let want = t.segments();
        senders[0].send_tso(&f, t.offload());
        let (cc, cr) = (collect(&mut rcv[0], want), collect(&mut rcv[1], want));
        senders[1].send_tso(&f, t.offload());
        let (rr, rc) = (collect(&mut rcv[2], want), collect(&mut rcv[3], want));
        let lists = [("c1->c2", cc), ("c1->r3", cr), ("r1->r2", rr), ("r1->c3", rc)];
        for (what, segs) in &lists {
            bad.extend(check(&format!("case {i} {t:?} flood {what}"), t, &f, segs));
        }
        for (what, segs) in &lists[1..] {
            if let Some(d) = differ(t, &lists[0].1, segs) {
                bad.push(format!("case {i} {t:?}: flood c1->c2 against {what}: {d}"));
            }
        }
        flooded.push(lists[0].1.clone());
    }

    // Learned: mac(2) on c2 and r2; unicast copy-once to copy-once against
    // rte_vhost to rte_vhost.
    let hello = frame(BCAST, mac(2), None, 60, 0);
    rcv[0].send(std::slice::from_ref(&hello));
    rcv[2].send(std::slice::from_ref(&hello));
    for r in [1, 3] {
        assert_eq!(collect(&mut rcv[r], 1).len(), 1, "hello flooded to {}", rcv[r].name);
    }
    for (i, t) in cases.iter().enumerate() {
        let f = t.frame(mac(2), mac(1));
        let want = t.segments();
        senders[0].send_tso(&f, t.offload());
        let cc = collect(&mut rcv[0], want);
        senders[1].send_tso(&f, t.offload());
        let rr = collect(&mut rcv[2], want);
        bad.extend(check(&format!("case {i} {t:?} unicast c1->c2"), t, &f, &cc));
        bad.extend(check(&format!("case {i} {t:?} unicast r1->r2"), t, &f, &rr));
        if let Some(d) = differ(t, &cc, &rr) {
            bad.push(format!("case {i} {t:?}: unicast c1->c2 against r1->r2: {d}"));
        }
        if let Some(d) = differ(t, &flooded[i], &cc) {
            bad.push(format!("case {i} {t:?}: flooded against unicast c1->c2: {d}"));
        }
    }
    // A last broadcast from each sender: one switch thread carries each
    // sender's frames to each receiver in order, so whatever a receiver
    // gets before it is more than expected.
    let end = frame(BCAST, mac(1), None, 60, u32::MAX);
    for s in &mut senders {
        s.send_tso(&end, TxOffload::default());
    }
    for vm in &mut rcv {
        let mut got = collect_until(vm, &end);
        if got.pop().as_ref() != Some(&end) {
            bad.push(format!("{}: the sender's last frame never came", vm.name));
        }
        if !got.is_empty() {
            bad.push(format!("{}: {} frames more than expected", vm.name, got.len()));
        }
    }
    let hellos: usize = senders.iter_mut().map(TsoVm::drain).sum();
    if hellos != 2 {
        bad.push(format!("senders received {hellos} frames, want the 2 hellos"));
    }
    let ports = sw.ports();
    if ports.iter().any(|p| !p.drops.is_empty()) {
        bad.push(format!("drops: {:?}", ports.iter().map(|p| (&p.name, &p.drops)).collect::<Vec<_>>()));
    }
    assert!(bad.is_empty(), "{} problems:\n{}", bad.len(), bad.iter().take(60).cloned().collect::<Vec<_>>().join("\n"));
    wait_until(DEADLINE, "the switch's mempool back to idle", || (sw.mempool_in_use() == idle).then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {} in use, {idle} when idle", sw.mempool_in_use()));
}

/// Receivers that negotiated GUEST_TSO get each segment whole, the same
/// bytes through either datapath, payload as sent.
#[test]
fn both_datapaths_pass_tso_frames_whole_to_a_guest_with_tso() {
    let dir = tempfile::tempdir().unwrap();
    let ports: String = NAMES.iter().map(|&n| port(n, true)).collect();
    let sw = Switchd::start(dir.path(), "", &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let vm = |n: &str| format!("{n}w");
    let mut senders = [TsoVm::connect(&vm("c1"), &sock("c1"), false), TsoVm::connect(&vm("r1"), &sock("r1"), false)];
    let mut rcv: Vec<TsoVm> = ["c2", "r3", "r2", "c3"].iter().map(|&n| TsoVm::connect(&vm(n), &sock(n), true)).collect();
    let has = |p: &vswitch::protocol::PortInfo, f: &str| p.features.iter().any(|x| x == f);
    sw.wait_ports("guests up, receivers with TSO", |ps| {
        ps.iter().all(|p| p.state == "up" && has(p, "host_tso4")) && ps.iter().filter(|p| !p.name.ends_with('1')).all(|p| has(p, "guest_tso4") && has(p, "guest_tso6"))
    });
    let idle = sw.mempool_in_use();
    let one = |r: &mut TsoVm| -> Vec<Vec<u8>> {
        let start = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() && start.elapsed() < Duration::from_secs(10) {
            got.extend(r.recv());
        }
        got
    };
    for (i, t) in cases().iter().enumerate() {
        let f = t.frame(mac(2), mac(1));
        senders[0].send_tso(&f, t.offload());
        let (cc, cr) = (one(&mut rcv[0]), one(&mut rcv[1]));
        senders[1].send_tso(&f, t.offload());
        let (rr, rc) = (one(&mut rcv[2]), one(&mut rcv[3]));
        // The partial checksum may differ: copy-once passes the sender's
        // (the pseudo-header with the TCP length, as Linux and vhost-net
        // do), rte_vhost's enqueue rewrites it without the length
        // (rte_net_intel_cksum_prepare). A receiver finishes either.
        let csum = 14 + t.l3() + 16;
        let but_csum = |g: &[u8]| -> Vec<u8> { g.iter().enumerate().filter(|(k, _)| !(csum..csum + 2).contains(k)).map(|(_, b)| *b).collect() };
        for (what, got) in [("c1->c2", &cc), ("c1->r3", &cr), ("r1->r2", &rr), ("r1->c3", &rc)] {
            assert_eq!(got.len(), 1, "case {i} {t:?} {what}: one whole frame");
            assert_eq!(got[0].len(), f.len(), "case {i} {what}: the segment whole");
            assert!(but_csum(&got[0]) == but_csum(&f), "case {i} {t:?} {what}: the frame as sent, but for its partial checksum");
        }
        assert_eq!(cc[0], f, "case {i}: copy-once to copy-once passes the frame untouched");
    }
    let ports = sw.ports();
    assert!(ports.iter().all(|p| p.drops.is_empty()), "{ports:?}");
    drop((senders, rcv));
    wait_until(DEADLINE, "the switch's mempool back to idle", || (sw.mempool_in_use() == idle).then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {} in use, {idle} when idle", sw.mempool_in_use()));
}
