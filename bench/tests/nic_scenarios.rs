//! The scenarios with a NIC in them, through vswitchd at a low rate: a VM
//! to a NIC and back (DPDK's vhost PMD as the NIC, drained by the sink), a
//! VM to a NIC that drops what it sends (what left is what the switch
//! counted), and a VM to a remote VXLAN endpoint and back (the generator
//! wraps and unwraps the outer headers). Every frame arrives once, in
//! order, or was counted as dropped; the copies are those of the path.
//! No speed is asserted.
mod common;

use std::time::Duration;

use bench::gen::{PortOpts, Ring, Size};
use bench::harness::{Scenario, Session};
use bench::peers::{Flavor, SwitchKind, SwitchStats};
use common::{generator, setup};

fn run(kind: SwitchKind, tag: &str, scenario: &str, size: Size) -> (bench::gen::GenReport, SwitchStats) {
    let sc = Scenario::parse(scenario).unwrap();
    let mut s = Session::open(generator(), kind, &setup(), &sc, 16, tag, PortOpts::for_size(size, Ring::Split), 0).expect("session");
    let (rep, st) = s.measure(size, Some(20_000.0), Duration::from_secs(1), Duration::ZERO).expect("measure");
    s.close();
    assert!(rep.sent_total() >= 15_000, "{scenario}: {rep:?}");
    assert_eq!(rep.sink.received + rep.sink.lost, rep.sent_total(), "{scenario}: {rep:?}");
    let dropped = st.dropped.expect("the switch counts its drops");
    assert!(rep.sink.lost <= dropped, "{scenario}: lost {} but the switch counted {dropped} drops: {rep:?} {st:?}", rep.sink.lost);
    assert_eq!(st.flooded, Some(0), "{scenario}: learned before measuring: no flooding");
    (rep, st)
}

/// Through a NIC the sink drains, and through the VXLAN tunnel both ways.
#[test]
fn sink_reads_every_frame_through_a_nic_and_a_tunnel() {
    let copy_once = SwitchKind::Vswitchd(Flavor::CopyOnce);
    // 1518 bytes: over zero copy's size threshold, so a VM's frame to the
    // NIC is lent, not copied; from the NIC it is copied once into the VM.
    for (scenario, tag, copies) in [("vm-nic", "cn", 0.0), ("nic-vm", "cm", 1.0), ("vxlan-encap", "ce", 1.0), ("vxlan-decap", "cd", 1.0)] {
        let (rep, st) = run(copy_once, tag, scenario, Size::Fixed(1518));
        assert_eq!((rep.sink.reordered, rep.sink.duplicates), (0, 0), "{scenario}: {rep:?}");
        assert!(rep.sink.latency_p50_ns > 0.0, "{scenario}: {rep:?}");
        if st.dropped == Some(0) {
            assert_eq!(st.copies_per_packet, Some(copies), "{scenario}: {st:?}");
        }
    }
}

/// A NIC that drops: the switch's own count of what it sent stands in for
/// the sink; zero copy lends, its copy path of the same build copies.
#[test]
fn a_dropping_nic_counts_what_left() {
    for (flavor, tag, copies) in [(Flavor::CopyOnce, "dz", 0.0), (Flavor::CopyOnceNoZeroCopy, "dc", 1.0)] {
        let (rep, st) = run(SwitchKind::Vswitchd(flavor), tag, "vm-nic-drop", Size::Fixed(1518));
        assert_eq!(st.nic_tx, Some(rep.sink.received));
        if st.dropped == Some(0) {
            assert_eq!(st.copies_per_packet, Some(copies), "{flavor:?}: {st:?}");
        }
    }
}
