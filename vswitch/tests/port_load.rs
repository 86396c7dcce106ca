//! What `show ports` says the bursts a port sent in cost: its busy cycles
//! and bursts, and apart the polls that took a whole burst from it, which
//! compare ports whose guests offer bursts of different sizes. A guest
//! whose transmit ring is kept full (a rust-vmm frontend) gives the switch
//! whole bursts; one that offers a frame at a time, each taken before the
//! next, gives none.
mod common;

use common::frontend::*;
use common::load::*;
use common::*;
use pmd_bridge::BURST;
use testbed::wait_until;

const FRAMES: u64 = 100_000;
const TRICKLE: u16 = 8;

#[test]
fn full_bursts_are_counted_apart_and_a_frame_at_a_time_gives_none() {
    let dir = tempfile::tempdir().unwrap();
    let ports = ["vm1", "vm2", "trickle"].map(|n| server_port(n, "copy-once")).concat();
    let sw = Switchd::start(dir.path(), "", &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let mut vm1 = sender(&sock("vm1"), &frame(mac(2), mac(1), None, 64, 1));
    let mut vm2 = sender(&sock("vm2"), &frame(mac(1), mac(2), None, 64, 2));
    let mut trickle = Guest::connect(&sock("trickle"), shared_memory(&[(0, 2 << 20)]), Setup::default());
    sw.wait_ports("the guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let at = trickle.put(&[&[0u8; HDR][..], &frame(BCAST, mac(3), None, 64, 0)].concat());
    for i in 0..TRICKLE {
        trickle.desc(TX, i, (at, (HDR + 64) as u32, 0, 0));
        trickle.offer(TX, i);
        trickle.wait_used(TX, i + 1);
    }
    let mut keep = [Keep { g: &mut vm1, queues: &[RX, TX], wake: true }, Keep { g: &mut vm2, queues: &[RX, TX], wake: true }];
    with_rings_kept_full(&mut keep, || wait_until(DEADLINE, "vm1's frames", || (sw.port("vm1").rx_packets >= FRAMES).then_some(())).unwrap());

    let full = sw.port("vm1");
    assert!(full.full_burst_packets > 0 && full.full_burst_packets <= full.rx_packets, "{full:?}");
    assert_eq!(full.full_burst_packets % BURST as u64, 0, "whole bursts only: {full:?}");
    assert!(full.full_burst_cycles > 0 && full.full_burst_cycles <= full.busy_cycles, "{full:?}");
    let t = sw.port("trickle");
    assert_eq!((t.rx_packets, t.rx_bursts), (TRICKLE as u64, TRICKLE as u64), "a frame a poll: {t:?}");
    assert!(t.busy_cycles > 0, "{t:?}");
    assert_eq!((t.full_burst_packets, t.full_burst_cycles), (0, 0), "no whole burst: {t:?}");
}
