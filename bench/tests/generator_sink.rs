//! Short runs at a low rate: the generator, the sink and the switch agree,
//! through vswitchd and through testpmd: every sequence number arrives once
//! and in order, or the switch counted it as dropped. On a loaded 2-core
//! machine the sink (sharing a core with the generator) can stall long
//! enough to fill its receive ring, and testpmd's io mode then drops: a
//! loss is wrong only when nobody counted it. No speed is asserted.
mod common;

use std::time::Duration;

use bench::gen::Size;
use bench::harness::{Scenario, Session};
use bench::peers::SwitchKind;
use common::{generator, setup};

fn agree(kind: SwitchKind, tag: &str, scenario: &str, size: Size) {
    let sc = Scenario::parse(scenario).unwrap();
    let mut s = Session::open(generator(), kind, &setup(), &sc, 16, tag, 9000).expect("session");
    let (rep, mut st) = s.measure(size, Some(20_000.0), Duration::from_secs(1), Duration::ZERO).expect("measure");
    if kind == SwitchKind::TestpmdIo {
        st = s.close();
    } else {
        s.close();
    }
    assert!(rep.sent_total() >= 15_000 * sc.streams.len() as u64, "{rep:?}");
    assert_eq!(rep.sink.received + rep.sink.lost, rep.sent_total(), "{kind:?}: {rep:?}");
    assert_eq!((rep.sink.reordered, rep.sink.duplicates), (0, 0), "{kind:?}: {rep:?}");
    let dropped = st.dropped.expect("the switch counts its drops");
    assert!(rep.sink.lost <= dropped, "{kind:?}: lost {} but the switch counted {dropped} drops: {rep:?}", rep.sink.lost);
    assert!(rep.sink.latency_p50_ns > 0.0);
    match kind {
        SwitchKind::Vswitchd | SwitchKind::VswitchdCopyOnce => {
            assert_eq!(st.flooded, Some(0), "learned before measuring: no flooding");
            assert!(st.cycles_per_packet.is_some());
        }
        _ => {}
    }
    // rte_vhost copies out of one guest and into the other; copy-once goes
    // guest to guest. A packet dropped at the output was never copied in.
    let full = match kind {
        SwitchKind::Vswitchd => 2.0,
        SwitchKind::VswitchdCopyOnce => 1.0,
        _ => return,
    };
    let cpp = st.copies_per_packet.expect("vswitchd counts copies");
    if dropped == 0 {
        assert_eq!(cpp, full, "{kind:?}");
    } else {
        assert!(cpp > full - 1.0 && cpp <= full, "{kind:?}: {cpp} copies per packet with {dropped} drops");
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
