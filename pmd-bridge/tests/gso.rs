//! librte_gso behind `segment_tcp4`, on real mbufs: 64 KB TCP/IPv4 frames
//! in mbuf chains cut into segments whose IPv4 and TCP checksums, ids,
//! sequence numbers and flags etherparse checks on its own; a shared frame
//! left as it was; frames librte_gso must not be given refused; nothing
//! left in the pool.
mod common;

use std::sync::Arc;

use common::pool;
use etherparse::{Ipv4Header, PacketBuilder, TcpHeader, VlanId};
use pmd_bridge::extbuf::{Lender, Payload};
use pmd_bridge::guest_mem::{Gpa, GuestMemory};
use pmd_bridge::{segment_tcp4, tx_flags, GsoError, Mbuf, Mempool, TxOffload};

const SEQ: u32 = 0x1000_0000;
const IP_ID: u16 = 0xfff0; // wraps while cut
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;
const CWR: u8 = 0x80;

struct Tso {
    vlan: bool,
    payload: usize,
    mss: u16,
    flags: u8,
}

impl Tso {
    fn l2(&self) -> u8 {
        if self.vlan {
            18
        } else {
            14
        }
    }

    /// The frame as a guest's stack hands it over (its TCP checksum a
    /// placeholder: the segments' are summed anew), and its offloads.
    fn frame(&self) -> (Vec<u8>, TxOffload) {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let payload: Vec<u8> = (0..self.payload).map(|i| (i * 7 + i / 251) as u8).collect();
        let ip = if self.vlan {
            eth.single_vlan(VlanId::try_new(42).unwrap()).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        } else {
            eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let tcp = ip
            .tcp(40000, 80, SEQ, 1024)
            .ack(7)
            .options_raw(&[1; 12]) // NOPs: the 32-byte header of Linux's timestamps
            .unwrap();
        let tcp = if self.flags & PSH != 0 { tcp.psh() } else { tcp };
        let tcp = if self.flags & FIN != 0 { tcp.fin() } else { tcp };
        let tcp = if self.flags & CWR != 0 { tcp.cwr() } else { tcp };
        let mut f = Vec::new();
        tcp.write(&mut f, &payload).unwrap();
        let l2 = usize::from(self.l2());
        f[l2 + 4..l2 + 6].copy_from_slice(&IP_ID.to_be_bytes());
        let t = TxOffload {
            flags: tx_flags::TCP_SEG | tx_flags::IPV4 | tx_flags::IP_CKSUM | tx_flags::TCP_CKSUM,
            l2_len: self.l2(),
            l3_len: 20,
            l4_len: 32,
            tso_segsz: self.mss,
        };
        (f, t)
    }
}

fn mbuf(pool: &Mempool, bytes: &[u8], t: TxOffload) -> Mbuf {
    let mut m = pool.alloc_from(bytes).unwrap();
    assert!(m.set_tx_offload(t));
    m
}

/// Checks every segment against the frame it was cut from.
fn check_segments(spec: &Tso, frame: &[u8], segs: &[Mbuf]) {
    let hdr = usize::from(spec.l2()) + 20 + 32;
    let mss = usize::from(spec.mss);
    assert_eq!(segs.len(), spec.payload.div_ceil(mss));
    let mut payload = Vec::new();
    for (k, s) in segs.iter().enumerate() {
        assert!(s.nb_segs() >= 2, "a header mbuf chained to the payload, not a copy");
        assert!(s.segments().all(|d| !d.is_empty()), "segment {k}: no empty mbuf in the chain");
        assert_eq!(s.tx_offload(), TxOffload::default(), "no offload left to ask for");
        let b = s.to_vec();
        assert_eq!(&b[..12], &frame[..12], "MACs");
        let (ip, rest) = Ipv4Header::from_slice(&b[usize::from(spec.l2())..]).unwrap();
        let (tcp, data) = TcpHeader::from_slice(rest).unwrap();
        assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "segment {k}: IPv4 header checksum");
        assert_eq!(usize::from(ip.total_len), b.len() - usize::from(spec.l2()), "segment {k}: IP length");
        assert_eq!(ip.identification, IP_ID.wrapping_add(k as u16), "segment {k}: IP id");
        assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(&ip, data).unwrap(), "segment {k}: TCP checksum");
        assert_eq!(tcp.sequence_number, SEQ.wrapping_add((k * mss) as u32), "segment {k}: sequence number");
        let last = k + 1 == segs.len();
        assert_eq!(tcp.psh, last && spec.flags & PSH != 0, "segment {k}: PSH on the last only");
        assert_eq!(tcp.fin, last && spec.flags & FIN != 0, "segment {k}: FIN on the last only");
        assert_eq!(tcp.cwr, k == 0 && spec.flags & CWR != 0, "segment {k}: CWR on the first only");
        assert!(tcp.ack && tcp.acknowledgment_number == 7);
        assert_eq!(data.len(), if last { spec.payload - k * mss } else { mss });
        payload.extend_from_slice(data);
    }
    assert_eq!(payload, frame[hdr..], "the payload, in order, once");
}

#[test]
fn chained_64k_frames_are_cut_with_checksums_etherparse_verifies() {
    let pool = pool("gso-cut", 4096);
    let max = 65535 - 20 - 32;
    for spec in [
        Tso { vlan: false, payload: max, mss: 1448, flags: ACK | PSH },
        Tso { vlan: true, payload: 64000, mss: 536, flags: ACK | PSH | FIN | CWR },
        Tso { vlan: false, payload: 30000, mss: 8960, flags: ACK | CWR },
        Tso { vlan: true, payload: 1449, mss: 1448, flags: ACK | FIN },
    ] {
        let (frame, t) = spec.frame();
        let m = mbuf(&pool, &frame, t);
        assert!(m.nb_segs() > 1 || frame.len() <= 2048, "the frame spans an mbuf chain");
        let mut segs = Vec::new();
        let n = segment_tcp4(m, &pool, |s| segs.push(s)).unwrap();
        assert_eq!(n, segs.len());
        check_segments(&spec, &frame, &segs);
        drop(segs);
        assert_eq!(pool.in_use_count(), 0, "segments and frame all freed");
    }
}

#[test]
fn a_shared_frame_is_cut_and_left_as_it_was() {
    let pool = pool("gso-shared", 512);
    let spec = Tso { vlan: false, payload: 20000, mss: 1448, flags: ACK };
    let (frame, t) = spec.frame();
    let m = mbuf(&pool, &frame, t);
    let other = m.share();
    let mut segs = Vec::new();
    segment_tcp4(m, &pool, |s| segs.push(s)).unwrap();
    check_segments(&spec, &frame, &segs);
    assert_eq!(other.tx_offload(), t, "another output still sees the TSO request");
    assert_eq!(other.to_vec(), frame);
    drop((segs, other));
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn an_indirect_clone_is_cut_over_the_same_payload() {
    let pool = pool("gso-clone", 512);
    let spec = Tso { vlan: true, payload: 12000, mss: 1448, flags: ACK | PSH };
    let (frame, t) = spec.frame();
    let m = mbuf(&pool, &frame, t);
    let clone = m.clone_indirect(&pool).unwrap();
    drop(m);
    assert!(!clone.head_is_direct());
    let mut segs = Vec::new();
    segment_tcp4(clone, &pool, |s| segs.push(s)).unwrap();
    check_segments(&spec, &frame, &segs);
    drop(segs);
    assert_eq!(pool.in_use_count(), 0, "every header mbuf freed once");
}

#[test]
fn a_chain_lent_over_guest_memory_is_cut_and_returned_once_all_are_freed() {
    let pool = pool("gso-lent", 512);
    let spec = Tso { vlan: false, payload: 10000, mss: 1448, flags: ACK | PSH };
    let (frame, t) = spec.frame();
    let hdr = 14 + 20 + 32;
    let mem = Arc::new(GuestMemory::new_owned(&[(0, 0x100000)]));
    let mut spans = Vec::new();
    for (i, piece) in frame[hdr..].chunks(4000).enumerate() {
        let gpa = Gpa(0x1000 + 0x2000 * i as u64);
        mem.write(gpa, piece).unwrap();
        mem.translate(gpa, piece.len() as u32, |s| spans.push(s)).unwrap();
    }
    let mut lender = Lender::new(4);
    // The private header holds the headers alone: librte_gso's first
    // payload piece of it is empty, and must not be sent.
    let mut m = lender.lend((&pool, &mut pmd_bridge::Stock::default()), &mem, 7, &frame[..hdr], Payload { spans: &spans, skip: 0, len: spec.payload as u64 }).unwrap();
    assert!(m.set_tx_offload(t));
    let mut segs = Vec::new();
    segment_tcp4(m, &pool, |s| segs.push(s)).unwrap();
    check_segments(&spec, &frame, &segs);
    let mut reaped = Vec::new();
    lender.reap(|tag| reaped.push(tag));
    assert!(reaped.is_empty(), "the segments still read guest memory");
    drop(segs);
    lender.reap(|tag| reaped.push(tag));
    assert_eq!(reaped, [7], "the guest's buffers come back once");
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn frames_librte_gso_must_not_be_given_are_refused() {
    let pool = pool("gso-bad", 512);
    let spec = Tso { vlan: false, payload: 8000, mss: 1448, flags: ACK };
    let (frame, t) = spec.frame();
    let with = |f: &dyn Fn(&mut Vec<u8>, &mut TxOffload)| {
        let (mut b, mut t) = (frame.clone(), t);
        f(&mut b, &mut t);
        mbuf(&pool, &b, t)
    };
    let cases: Vec<(&str, Mbuf)> = vec![
        ("IPv6 flags", with(&|_, t| t.flags = t.flags & !tx_flags::IPV4 | tx_flags::IPV6)),
        ("no TCP_SEG", with(&|_, t| t.flags &= !tx_flags::TCP_SEG)),
        ("MSS 0", with(&|_, t| t.tso_segsz = 0)),
        ("l3_len disagrees with IHL", with(&|_, t| t.l3_len = 24)),
        ("l4_len disagrees with the data offset", with(&|_, t| t.l4_len = 20)),
        ("l2_len short of Ethernet", with(&|_, t| t.l2_len = 10)),
        ("not TCP", with(&|b, _| b[14 + 9] = 17)),
        ("an IPv4 fragment", with(&|b, _| b[14 + 6] = 0x20)),
        ("not IPv4", with(&|b, _| b[14] = 0x65)),
        ("headers past the frame", with(&|b, t| {
            b.truncate(60);
            t.l4_len = 32;
        })),
        ("too many segments", with(&|_, t| t.tso_segsz = 8)),
        ("one segment: nothing to cut", with(&|_, t| t.tso_segsz = 8000)),
        ("headers over two mbufs", {
            let mut head = pool.alloc_from(&frame[..40]).unwrap();
            head.chain(pool.alloc_from(&frame[40..]).unwrap()).unwrap();
            assert!(head.set_tx_offload(t));
            head
        }),
    ];
    for (what, m) in cases {
        let mut emitted = 0;
        assert_eq!(segment_tcp4(m, &pool, |_| emitted += 1), Err(GsoError::Malformed), "{what}");
        assert_eq!(emitted, 0, "{what}");
    }
    assert_eq!(pool.in_use_count(), 0, "refused frames are freed");
}

#[test]
fn a_pool_too_small_for_the_segments_is_no_mbuf() {
    // 20 mbufs: the frame's 5, then librte_gso runs out part-way.
    let pool = pool("gso-small", 20);
    let (frame, t) = Tso { vlan: false, payload: 9000, mss: 536, flags: ACK }.frame();
    let mut emitted = 0;
    assert_eq!(segment_tcp4(mbuf(&pool, &frame, t), &pool, |_| emitted += 1), Err(GsoError::NoMbuf));
    assert_eq!(emitted, 0);
    assert_eq!(pool.in_use_count(), 0, "what librte_gso took is back");
}
