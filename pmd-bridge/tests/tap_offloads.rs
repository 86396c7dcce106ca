//! A tap port (net_tap, root) configured with transmit offloads does what
//! `tx_offload_caps` claims for the frames guests send: full-sized TCP
//! segments.
mod common;

use std::sync::Arc;

use common::{eal, pool};
use pmd_bridge::{tx_flags, Burst, EthPort, PortConfig, TxOffload};

const MSS: usize = 1448;

/// Ethernet, IPv4 (DF), TCP with timestamps (a 32-byte header, as Linux
/// sends), `payload` bytes: one TSO request's frame.
fn tcp_frame(payload: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let ip_len = (20 + 32 + payload) as u16;
    f.extend([0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 100]);
    f.extend([0, 80, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 1]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

/// DPDK's tap PMD took TSO packets only up to an MSS of MTU minus all
/// headers (L2 included): it refused Linux's full-sized segments, and the
/// rest of their burst with them, so a guest behind a tap port never got
/// past a few Mbit/s. A tap port must not claim TSO it refuses.
#[test]
fn regression_a_tap_port_takes_the_full_sized_tcp_segments_it_claims_to_cut() {
    let pool = Arc::new(pool("tap", 512));
    let start = pool.free_count();
    let iface = format!("pbtap{}", std::process::id() % 100_000);
    let mut port = EthPort::open(eal(), &format!("net_tap_pb,iface={iface}")).expect("tap port (needs root)");
    // The tap fills each receive descriptor from the pool at setup.
    let cfg = PortConfig { tx_offloads: true, rx_desc: 64, tx_desc: 64, ..Default::default() };
    port.configure(&cfg, Arc::clone(&pool)).unwrap();
    port.start().unwrap();
    let caps = port.tx_offload_caps();
    assert!(caps.tcp_csum && caps.ipv4_csum, "the tap's checksum offloads stay: {caps:?}");
    let mut txq = port.tx_queue(0).unwrap();
    let (frame, offload) = if caps.tso {
        let flags = tx_flags::TCP_SEG | tx_flags::TCP_CKSUM | tx_flags::IPV4 | tx_flags::IP_CKSUM;
        (tcp_frame(3 * MSS), TxOffload { flags, l2_len: 14, l3_len: 20, l4_len: 32, tso_segsz: MSS as u16 })
    } else {
        // What the switch sends instead: segments it cut, their sums to fill.
        let flags = tx_flags::TCP_CKSUM | tx_flags::IPV4 | tx_flags::IP_CKSUM;
        (tcp_frame(MSS), TxOffload { flags, l2_len: 14, l3_len: 20, l4_len: 32, tso_segsz: 0 })
    };
    let mut m = pool.alloc_from(&frame).unwrap();
    assert!(m.set_tx_offload(offload));
    let mut burst = Burst::<1>::new();
    burst.push(m).unwrap();
    assert_eq!(txq.tx_burst(&mut burst), 1, "the tap refused a {}-byte segment at MSS {MSS} (claims {caps:?})", frame.len());
    assert_eq!(port.stats().unwrap().tx_errors, 0);
    drop((txq, port));
    assert_eq!(pool.free_count(), start);
}
