//! `[switch] vhost_retries` on copy-once ports (issue 15, item 7): a frame
//! for a guest whose receive ring has too few buffers is tried again that
//! many times before it is dropped (`tx_full`), as on rte_vhost ports; it
//! used to be dropped at the first try. A retry while the guest offers
//! nothing new costs one load of its avail index, too little, and over too
//! short a time, for a guest refilling its ring to be caught at it
//! reliably; so this test sees the retries in what they cost the PMD
//! thread: two switches alike but for `vhost_retries` (0 and 64), each with
//! a guest (a rust-vmm frontend, its rings kept full) sending 64-byte
//! frames to a guest that offers no receive buffer. Every frame is tried
//! 1 and 65 times: the CPU time per frame must differ by far more than the
//! noise between windows.
mod common;

use std::path::Path;
use std::time::Duration;

use common::frontend::*;
use common::load::*;
use common::*;

const WINDOW: u64 = 200_000;
const WINDOW_CAP: Duration = Duration::from_secs(10);
const ROUNDS: usize = 3;
const RETRIES: u32 = 64;
/// The least CPU time per frame 64 retries add, over the switch without
/// retries: 64 index loads and calls, against a whole frame's rx, lookup
/// and refused delivery (measured: about +100%).
const MIN_ADDED: f64 = 0.25;

struct Switch {
    sw: Switchd,
    vm1: Guest,
    _full: Guest,
    clock: PmdClock,
    _dir: tempfile::TempDir,
}

/// A switch with `vhost_retries = retries`: vm1 sends to `full`'s MAC,
/// learned from a frame `full` sent; `full` offers no receive buffer.
fn switch(retries: u32) -> Switch {
    let dir = tempfile::tempdir().unwrap();
    let ports = ["vm1", "full"].map(|n| server_port(n, "copy-once")).concat();
    let sw = Switchd::start(dir.path(), &format!("vhost_retries = {retries}"), &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let vm1 = sender(&sock("vm1"), &frame(mac(3), mac(1), None, 64, 1));
    let full = learned(&sock("full"), &sw);
    let clock = PmdClock::of(&sw);
    Switch { sw, vm1, _full: full, clock, _dir: dir }
}

/// A guest that sends one frame from `mac(3)` (the switch learns it there)
/// and offers nothing to receive into.
fn learned(sock: &Path, sw: &Switchd) -> Guest {
    let mut g = Guest::connect(sock, shared_memory(&[(0, 2 << 20)]), Setup::default());
    let at = g.put(&[&[0u8; HDR][..], &frame(BCAST, mac(3), None, 64, 0)].concat());
    g.desc(TX, 0, (at, (HDR + 64) as u32, 0, 0));
    g.offer(TX, 0);
    g.wait_used(TX, 1);
    sw.wait_ports("both guests up, mac(3) learned", |ps| ps.iter().all(|p| p.state == "up" && (p.name != "full" || p.rx_packets == 1)));
    g
}

impl Switch {
    fn ns_per_frame(&mut self) -> f64 {
        let mut keep = [Keep { g: &mut self.vm1, queues: &[RX, TX], wake: true }];
        with_rings_kept_full(&mut keep, || self.clock.ns_per_packet(&self.sw, WINDOW, WINDOW_CAP))
    }
}

#[test]
fn regression_copy_once_ports_retry_a_frame_vhost_retries_times() {
    let mut none = switch(0);
    let mut some = switch(RETRIES);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(none.ns_per_frame());
        b.push(some.ns_per_frame());
    }
    let (a, b) = (median(a), median(b));
    eprintln!("PMD CPU ns per frame for a full guest: vhost_retries = 0: {a:.0}, = {RETRIES}: {b:.0} ({:+.0}%, {:.1} ns a retry)", 100.0 * (b / a - 1.0), (b - a) / RETRIES as f64);
    for s in [&none, &some] {
        let full = s.sw.port("full");
        assert!(full.drops.get("tx_full").copied().unwrap_or(0) >= WINDOW, "frames for the full guest dropped as tx_full: {full:?}");
    }
    assert!(b / a - 1.0 > MIN_ADDED, "{RETRIES} retries added {:+.0}% to a frame's cost: not tried again?", 100.0 * (b / a - 1.0));
}
