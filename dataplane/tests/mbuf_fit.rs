//! The mbuf path's software offloads (`mbuf_offload::fit`) on real mbufs:
//! a TCP/IPv4 TSO frame is cut by librte_gso over its own payload, a
//! TCP/IPv6 one by the switch's segmenter (DPDK 22.11's librte_gso has no
//! IPv6), every segment's checksums verified by etherparse; a frame
//! librte_gso must not be given is a counted drop; a flooded frame keeps
//! its TSO request for the output that takes it. A burst's stock of mbufs
//! refills in steps and gives back what it did not hand out.
use std::sync::OnceLock;

use dataplane::counters::DropReason;
use dataplane::mbuf_offload::fit;
use dataplane::offload::Caps;
use etherparse::{Ipv4Header, Ipv6Header, PacketBuilder, TcpHeader};
use pmd_bridge::{tx_flags, Eal, Mbuf, Mempool, TxOffload};
use testbed::FilePrefix;

const SEQ: u32 = 77_000;
const TCP_HLEN: usize = 32;

fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = FilePrefix::for_process("mbuf-fit");
        pmd_bridge::log::set_echo(std::env::var_os("VSW_TEST_VERBOSE").is_some());
        Eal::init(&prefix.eal_args(512)).unwrap()
    })
}

fn pool(name: &str) -> Mempool {
    Mempool::new(eal(), name, 2048, 0, 2048).unwrap()
}

/// A TSO frame as a guest hands it over, in an mbuf chain, with the
/// offload flags rte_vhost's dequeue (or the copy-once receive) sets.
fn tso_frame(pool: &Mempool, v6: bool, payload: usize, mss: u16) -> (Mbuf, Vec<u8>) {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = if v6 { eth.ipv6([0xfd; 16], [0xfe; 16], 64) } else { eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64) };
    let tcp = ip.tcp(5000, 80, SEQ, 512).ack(1).psh().options_raw(&[1; 12]).unwrap();
    let data: Vec<u8> = (0..payload).map(|i| (i * 13 + i / 509) as u8).collect();
    let mut f = Vec::new();
    tcp.write(&mut f, &data).unwrap();
    let (ipf, l3) = if v6 { (tx_flags::IPV6, 40) } else { (tx_flags::IPV4 | tx_flags::IP_CKSUM, 20) };
    let t = TxOffload { flags: tx_flags::TCP_SEG | tx_flags::TCP_CKSUM | ipf, l2_len: 14, l3_len: l3, l4_len: TCP_HLEN as u8, tso_segsz: mss };
    let mut m = pool.alloc_from(&f).unwrap();
    assert!(m.set_tx_offload(t));
    (m, f)
}

fn cut(m: Mbuf, caps: Caps, pool: &Mempool) -> Result<Vec<Mbuf>, DropReason> {
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    fit(m, caps, pool, &mut scratch, |s| out.push(s)).map(|()| out)
}

/// Each segment a valid TCP segment of at most `mss` bytes, checksums
/// right; their payloads, in order, the frame's.
fn check(frame: &[u8], v6: bool, mss: u16, segs: &[Mbuf]) {
    let l3 = if v6 { 40 } else { 20 };
    let mut payload = Vec::new();
    for (k, s) in segs.iter().enumerate() {
        let b = s.to_vec();
        let (tcp, data) = if v6 {
            let (ip, rest) = Ipv6Header::from_slice(&b[14..]).unwrap();
            let (tcp, data) = TcpHeader::from_slice(rest).unwrap();
            assert_eq!(tcp.checksum, tcp.calc_checksum_ipv6(&ip, data).unwrap(), "segment {k}: TCP checksum");
            (tcp, data)
        } else {
            let (ip, rest) = Ipv4Header::from_slice(&b[14..]).unwrap();
            assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "segment {k}: IPv4 checksum");
            let (tcp, data) = TcpHeader::from_slice(rest).unwrap();
            assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(&ip, data).unwrap(), "segment {k}: TCP checksum");
            (tcp, data)
        };
        assert!(data.len() <= usize::from(mss) && b.len() == 14 + l3 + TCP_HLEN + data.len());
        assert_eq!(tcp.sequence_number, SEQ + payload.len() as u32, "segment {k}");
        assert_eq!(tcp.psh, k + 1 == segs.len(), "segment {k}: PSH on the last only");
        assert_eq!(s.tx_offload(), TxOffload::default());
        payload.extend_from_slice(data);
    }
    assert_eq!(payload, frame[14 + l3 + TCP_HLEN..]);
}

#[test]
fn tso_frames_are_cut_for_an_output_without_tso() {
    let pool = pool("fit-cut");
    for (v6, payload, mss) in [(false, 65000, 1448), (false, 3000, 536), (true, 40000, 1428), (true, 9000, 8940)] {
        let (m, frame) = tso_frame(&pool, v6, payload, mss);
        let segs = cut(m, Caps::NONE, &pool).unwrap();
        assert_eq!(segs.len(), payload.div_ceil(usize::from(mss)));
        check(&frame, v6, mss, &segs);
        if !v6 {
            assert!(segs.iter().all(|s| s.nb_segs() >= 2), "librte_gso: headers chained to the frame's own payload");
        }
        drop(segs);
        assert_eq!(pool.in_use_count(), 0, "v6 {v6}, {payload} B");
    }
}

/// Spoils a good frame or its offload fields.
type Spoil = fn(&mut Vec<u8>, &mut TxOffload);

#[test]
fn a_tso_frame_malformed_for_gso_is_a_counted_drop() {
    let pool = pool("fit-bad");
    let cases: [(&str, Spoil); 3] = [
        ("an IPv4 fragment", |f, _| f[14 + 6] |= 0x20),
        ("an l4_len that is not the TCP header's", |_, t| t.l4_len = 20),
        ("an MSS below the minimum", |_, t| t.tso_segsz = 40),
    ];
    for (what, spoil) in cases {
        let (m, mut frame) = tso_frame(&pool, false, 20000, 1448);
        let mut t = m.tx_offload();
        drop(m);
        spoil(&mut frame, &mut t);
        let mut m = pool.alloc_from(&frame).unwrap();
        assert!(m.set_tx_offload(t));
        assert_eq!(cut(m, Caps::NONE, &pool).err(), Some(DropReason::Malformed), "{what}");
        assert_eq!(pool.in_use_count(), 0, "{what}: freed");
    }
}

#[test]
fn a_flooded_frame_keeps_its_tso_for_the_output_that_takes_it() {
    let pool = pool("fit-flood");
    let (m, frame) = tso_frame(&pool, false, 30000, 1448);
    let t = m.tx_offload();
    let segs = cut(m.share(), Caps::NONE, &pool).unwrap();
    check(&frame, false, 1448, &segs);
    let whole = cut(m, Caps::ALL, &pool).unwrap();
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].tx_offload(), t, "the NIC or guest that takes TSO still gets the request");
    assert_eq!(whole[0].to_vec(), frame);
    drop((segs, whole));
    assert_eq!(pool.in_use_count(), 0);
}
