//! Short runs at a low rate: the generator and the sink agree, through
//! vswitchd and through testpmd: every sequence number arrives once, in
//! order, with zero loss. No speed is asserted.
mod common;

use std::time::Duration;

use bench::gen::Size;
use bench::harness::{Scenario, Session};
use bench::peers::SwitchKind;
use common::{generator, setup};

fn agree(kind: SwitchKind, tag: &str, scenario: &str, size: Size) {
    let sc = Scenario::parse(scenario).unwrap();
    let mut s = Session::open(generator(), kind, &setup(), &sc, 16, tag, 9000).expect("session");
    let (rep, st) = s.measure(size, Some(20_000.0), Duration::from_secs(1), Duration::ZERO).expect("measure");
    s.close();
    assert!(rep.sent_total() >= 15_000 * sc.streams.len() as u64, "{rep:?}");
    assert_eq!(rep.sink.received, rep.sent_total(), "{kind:?}: {rep:?}");
    assert_eq!((rep.sink.lost, rep.sink.reordered, rep.sink.duplicates), (0, 0, 0), "{kind:?}: {rep:?}");
    assert!(rep.sink.latency_p50_ns > 0.0);
    match kind {
        SwitchKind::Vswitchd | SwitchKind::VswitchdCopyOnce => {
            assert_eq!(st.flooded, Some(0), "learned before measuring: no flooding");
            assert!(st.cycles_per_packet.is_some());
        }
        _ => {}
    }
    match kind {
        SwitchKind::Vswitchd => assert_eq!(st.copies_per_packet, Some(2.0), "rte_vhost: out of one guest, into the other"),
        SwitchKind::VswitchdCopyOnce => assert_eq!(st.copies_per_packet, Some(1.0), "copy-once: guest to guest"),
        _ => {}
    }
}

#[test]
fn through_vswitchd() {
    agree(SwitchKind::Vswitchd, "vs", "2vm", Size::Fixed(64));
    agree(SwitchKind::Vswitchd, "vc", "3vm-chain", Size::Imix);
}

#[test]
fn through_vswitchd_copy_once() {
    agree(SwitchKind::VswitchdCopyOnce, "cs", "2vm", Size::Fixed(64));
    agree(SwitchKind::VswitchdCopyOnce, "cc", "3vm-chain", Size::Imix);
}

#[test]
fn through_testpmd() {
    agree(SwitchKind::TestpmdIo, "tp", "2vm", Size::Fixed(1518));
}
