//! Short runs at a low rate: the generator, the sink and the switch agree,
//! through vswitchd and through testpmd: every sequence number arrives once
//! and in order, or the switch counted it as dropped. On a loaded 2-core
//! machine the sink (sharing a core with the generator) can stall long
//! enough to fill its receive ring, and testpmd's io mode then drops: a
//! loss is wrong only when nobody counted it. No speed is asserted; the
//! switch's cycles by second only have to be there. A TSO
//! stream is counted in TCP payload bytes, whole segments or cut.
mod common;

use std::time::Duration;

use bench::frame;
use bench::gen::{PortOpts, Ring, Size};
use bench::harness::{cell, Cell, Plan, Rate, Scenario, Session};
use bench::peers::{Flavor, SwitchKind};
use common::{generator, setup};

fn agree(kind: SwitchKind, tag: &str, scenario: &str, size: Size) {
    agree_on(kind, tag, scenario, size, Ring::Split)
}

fn agree_on(kind: SwitchKind, tag: &str, scenario: &str, size: Size, ring: Ring) {
    let sc = Scenario::parse(scenario).unwrap();
    let mut s = Session::open(generator(), kind, &setup(), &sc, 16, tag, PortOpts::for_size(size, ring), 0).expect("session");
    assert_eq!(s.switch.ring_negotiated(), Ok(ring), "{kind:?}");
    // Two seconds: a whole one for the switch's cycles by second.
    let (rep, st) = s.measure(size, Some(20_000.0), Duration::from_secs(2), Duration::ZERO).expect("measure");
    s.close();
    assert!(rep.sent_total() >= 15_000 * sc.streams.len() as u64, "{rep:?}");
    assert_eq!(rep.sink.received + rep.sink.lost, rep.sent_total(), "{kind:?}: {rep:?}");
    assert_eq!((rep.sink.reordered, rep.sink.duplicates), (0, 0), "{kind:?}: {rep:?}");
    let dropped = st.dropped.expect("the switch counts its drops");
    assert!(rep.sink.lost <= dropped, "{kind:?}: lost {} but the switch counted {dropped} drops: {rep:?}", rep.sink.lost);
    assert!(rep.sink.latency_p50_ns > 0.0);
    assert!(!st.cycles_by_second.is_empty() && st.cycles_by_second.iter().all(|&c| c > 0.0), "{kind:?}: cycles by second {:?}", st.cycles_by_second);
    if let SwitchKind::Vswitchd(_) = kind {
        assert_eq!(st.flooded, Some(0), "learned before measuring: no flooding");
        assert!(st.cycles_per_packet.is_some());
    }
    // rte_vhost copies out of one guest and into the other; copy-once goes
    // guest to guest. A packet dropped at the output was never copied in.
    let full = match kind {
        SwitchKind::Vswitchd(Flavor::RteVhost) => 2.0,
        SwitchKind::Vswitchd(Flavor::CopyOnce) => 1.0,
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
    agree(SwitchKind::Vswitchd(Flavor::RteVhost), "vs", "2vm", Size::Fixed(64));
    agree(SwitchKind::Vswitchd(Flavor::RteVhost), "vc", "3vm-chain", Size::Imix);
}

#[test]
fn through_vswitchd_copy_once() {
    agree(SwitchKind::Vswitchd(Flavor::CopyOnce), "cs", "2vm", Size::Fixed(64));
    agree(SwitchKind::Vswitchd(Flavor::CopyOnce), "cc", "3vm-chain", Size::Imix);
}

#[test]
fn through_testpmd() {
    agree(SwitchKind::TestpmdIo, "tp", "2vm", Size::Fixed(1518));
}

/// 9000-byte frames: the generator sends each from one jumbo buffer, the
/// VMs receive them into 2 KB buffers (mergeable), every switch at MTU 9000.
#[test]
fn jumbo_frames() {
    agree(SwitchKind::Vswitchd(Flavor::RteVhost), "vj", "2vm", Size::Fixed(9000));
    agree(SwitchKind::Vswitchd(Flavor::CopyOnce), "cj", "2vm", Size::Fixed(9000));
    agree(SwitchKind::TestpmdIo, "tj", "2vm", Size::Fixed(9000));
}

/// VMs that offer packed rings: rte_vhost takes them (testpmd, vswitchd's
/// rte_vhost ports), and the harness sees it negotiated.
#[test]
fn packed_rings() {
    agree_on(SwitchKind::TestpmdIo, "tq", "2vm", Size::Fixed(64), Ring::Packed);
    agree_on(SwitchKind::Vswitchd(Flavor::RteVhost), "vq", "2vm", Size::Fixed(64), Ring::Packed);
}

/// One copy-once cell of `sc` at 64 B, 10,000 frames a second a stream.
fn low_rate(sc: &Scenario, duration: Duration) -> Plan {
    Plan {
        switches: vec![SwitchKind::Vswitchd(Flavor::CopyOnce)],
        scenarios: vec![sc.clone()],
        sizes: vec![Size::Fixed(64)],
        flows: vec![1],
        repeats: 1,
        duration,
        full: false,
        loss_tolerance: 0.0,
        latency_fraction: 0.0,
        latency_duration: Duration::ZERO,
        throttle: Duration::ZERO,
        rate: Some(Rate::Pps(10_000.0)),
    }
}

/// A packed-ring cell on a switch that negotiates split rings is reported
/// as not supported, never measured under the packed label.
#[test]
fn packed_cell_is_never_measured_on_split_rings() {
    let sc = Scenario::parse("2vm").unwrap();
    let plan = low_rate(&sc, Duration::from_millis(300));
    let c = Cell { kind: SwitchKind::Vswitchd(Flavor::CopyOnce), scenario: &sc, flows: 1, sizes: &plan.sizes, ring: Ring::Packed, repeat: 0 };
    let out = cell(generator(), &setup(), &plan, &c, "cq");
    assert_eq!(out.len(), 1);
    match &out[0] {
        Ok(row) => assert_eq!(row.ring, Ring::Packed, "measured only once packed was negotiated"),
        Err(m) => assert!(m.unsupported && m.reason.contains("negotiated split"), "{m:?}"),
    }
}

/// `2vm-rings`: one phase, two pairs, a row each from its own ports, each
/// on the ring its VMs offered (`by_ring` fails a row whose port did not
/// negotiate it), in both repeats' layouts: VMs 2 and 3 packed, then 0
/// and 1.
#[test]
fn both_rings_in_one_phase() {
    let sc = Scenario::parse("2vm-rings").unwrap();
    let plan = low_rate(&sc, Duration::from_secs(1));
    for repeat in 0..2 {
        let c = Cell { kind: SwitchKind::Vswitchd(Flavor::CopyOnce), scenario: &sc, flows: 1, sizes: &plan.sizes, ring: Ring::Split, repeat };
        let rows: Vec<_> = cell(generator(), &setup(), &plan, &c, &format!("cr{repeat}")).into_iter().map(|r| r.expect("measured")).collect();
        assert_eq!(rows.iter().map(|r| r.ring).collect::<Vec<_>>(), [Ring::Split, Ring::Packed]);
        for r in &rows {
            // Two streams of 10,000 frames a second each.
            assert!(r.rx_mpps > 0.015 && r.cycles_per_packet.is_some_and(|c| c > 0.0), "repeat {repeat}: {r:?}");
        }
    }
}

/// A TSO stream at a low rate: every TCP payload byte sent arrives exactly
/// once, in order, or was in a segment the switch counted as dropped.
/// vswitchd offers the VMs TSO both ways, so it takes each 64 KB segment
/// whole and hands it over whole to the receiving VM, which negotiated
/// GUEST_TSO4 (the cut for a VM without it: vswitch/tests/tso_differential.rs).
fn agree_tso(kind: SwitchKind, tag: &str) {
    let sc = Scenario::parse("2vm").unwrap();
    let rate = 400.0; // segments per second per stream: about 200 Mbit/s
    let mut s = Session::open(generator(), kind, &setup(), &sc, 4, tag, PortOpts::for_size(Size::Tso, Ring::Split), 0).expect("session");
    let features = s.switch.features().expect("vswitchd lists features");
    assert!(features.iter().all(|f| f.iter().any(|n| n == "host_tso4") && f.iter().any(|n| n == "csum")), "{features:?}");
    assert!(features.iter().all(|f| f.iter().any(|n| n == "guest_tso4")), "{features:?}");
    let (rep, st) = s.measure(Size::Tso, Some(rate), Duration::from_secs(1), Duration::ZERO).expect("measure");
    s.close();
    let payload = frame::TSO_PAYLOAD as u64;
    let sent = rep.sent_total();
    assert_eq!(rep.payload, payload);
    assert!(sent as f64 >= 0.75 * rate * sc.streams.len() as f64, "{rep:?}");
    let r = &rep.sink;
    assert_eq!(r.payload_bytes + r.lost_bytes, sent * payload, "{kind:?}: {rep:?}");
    assert_eq!((r.reordered, r.duplicates, r.duplicate_bytes), (0, 0, 0), "{kind:?}: {rep:?}");
    assert!(r.payload_bytes > 0 && r.latency_p50_ns > 0.0, "{rep:?}");
    assert!(st.drops_by_reason.keys().all(|k| !k.starts_with("hdr_")), "{kind:?}: headers refused: {st:?}");
    let dropped = st.dropped.expect("the switch counts its drops");
    // A segment goes into a guest whole or not at all (one count), one
    // frame per segment.
    assert_eq!(r.lost_bytes % payload, 0, "{rep:?}");
    assert!(r.lost <= dropped, "lost {} segments, the switch counted {dropped} drops: {rep:?} {st:?}", r.lost);
    assert_eq!(r.frames, r.received, "{rep:?}");
    assert_eq!(rep.frames_per_segment().map(|f| f.round()), Some(1.0), "{rep:?}");
    if kind == SwitchKind::Vswitchd(Flavor::CopyOnce) {
        let cpp = st.copies_per_packet.expect("vswitchd counts copies");
        if dropped == 0 {
            assert_eq!(cpp, 1.0, "one payload copy per 64 KB segment");
        } else {
            assert!(cpp > 0.0 && cpp <= 1.0, "{cpp}");
        }
    }
    assert_eq!(st.flooded, Some(0));
}

#[test]
fn tso_through_vswitchd_copy_once() {
    agree_tso(SwitchKind::Vswitchd(Flavor::CopyOnce), "ct");
}

#[test]
fn tso_through_vswitchd() {
    agree_tso(SwitchKind::Vswitchd(Flavor::RteVhost), "vt");
}
