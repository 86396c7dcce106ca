use super::*;

#[test]
fn cycles_by_second_are_each_intervals_own_and_skip_idle_ones() {
    assert_eq!(by_interval(&[]), Vec::<f64>::new());
    assert_eq!(by_interval(&[(100, 1)]), Vec::<f64>::new());
    // 900 cycles over 9 packets, then nothing forwarded, then 4000
    // over 20: the totals' own ratio (5000 / 30) is no second's.
    assert_eq!(by_interval(&[(100, 1), (1000, 10), (1000, 10), (5000, 30)]), vec![100.0, 200.0]);
    // Counters zeroed under the sampler: that interval says nothing.
    assert_eq!(by_interval(&[(1000, 10), (0, 0), (300, 3)]), vec![100.0]);
}

/// A `2vm-rings` phase: a row per ring from its own VMs' ports, which
/// VMs those are alternating with the repeat; a port whose ring is not
/// the one its VM offered fails the phase; `2vm`'s row passes as it is.
#[test]
fn a_phase_with_both_rings_gives_a_row_each_from_their_own_ports() {
    // Half of each port's packets came in full bursts, at 4/5 of its
    // cycles a packet.
    let port = |i: usize, rx: u64, busy: u64, packed: bool| PortLoad { name: format!("vm{i}"), rx_packets: rx, tx_packets: rx * 2, busy_cycles: busy, rx_bursts: rx / 20, full_burst_packets: rx / 2, full_burst_cycles: busy * 2 / 5, packed };
    let sc = Scenario::parse("2vm-rings").unwrap();
    let st = SwitchStats { ports: vec![port(0, 100, 10_000, false), port(1, 300, 20_000, false), port(2, 200, 10_000, true), port(3, 200, 14_000, true)], ..Default::default() };
    let r = Row { rx_mpps: 1.6, gbps: 16.0, cycles_per_packet: Some(135.0), cycles_by_second: vec![135.0], ..Default::default() };
    let rows = by_ring(r.clone(), &st, &sc, 1e-3, 0).unwrap();
    let got: Vec<_> = rows.iter().map(|r| (r.ring, r.cycles_per_packet, r.switch_burst, r.rx_mpps, r.gbps)).collect();
    assert_eq!(got, [(Ring::Split, Some(75.0), Some(20.0), 0.8, 8.0), (Ring::Packed, Some(60.0), Some(20.0), 0.8, 8.0)]);
    let full: Vec<_> = rows.iter().map(|r| (r.full_burst_cycles, r.full_burst_share)).collect();
    assert_eq!(full, [(Some(60.0), Some(0.5)), (Some(48.0), Some(0.5))]);
    assert!(rows.iter().all(|r| r.cycles_by_second.is_empty() && r.note.contains("one phase")), "the seconds were both rings'");
    let wrong = SwitchStats { ports: vec![port(0, 1, 1, false), port(1, 1, 1, false), port(2, 1, 1, false), port(3, 1, 1, true)], ..Default::default() };
    assert!(by_ring(r.clone(), &wrong, &sc, 1.0, 0).unwrap_err().contains("vm2"));
    // The next repeat, VMs 0 and 1 offer the packed rings.
    let swapped = SwitchStats { ports: vec![port(0, 200, 10_000, true), port(1, 200, 14_000, true), port(2, 100, 10_000, false), port(3, 300, 20_000, false)], ..Default::default() };
    assert_eq!(by_ring(r.clone(), &swapped, &sc, 1e-3, 1).unwrap(), rows);
    assert!(by_ring(r.clone(), &st, &sc, 1.0, 1).is_err(), "repeat 0's layout in repeat 1");
    assert_eq!((0..4).map(|vm| sc.ring_of(vm, 2)).collect::<Vec<_>>(), [Some(Ring::Split), Some(Ring::Split), Some(Ring::Packed), Some(Ring::Packed)]);
    assert_eq!(by_ring(r.clone(), &st, &Scenario::parse("2vm").unwrap(), 1.0, 0).unwrap(), [r]);
}

#[test]
fn rates() {
    assert_eq!(Rate::parse("1000000", 10.0).map(|r| r.pps(Size::Fixed(64))), Some(1e6));
    let line = Rate::parse("100%", 10.0).unwrap().pps(Size::Fixed(64));
    assert!((line - 14_880_952.4).abs() < 1.0, "10GbE at 64 B: {line}");
    // 45 frames of 1448 + 58 bytes, plus 20 of preamble and gap each.
    let tso = Rate::parse("100%", 10.0).unwrap().pps(Size::Tso);
    assert!((tso - 10e9 / (45.0 * 1526.0 * 8.0)).abs() < 1e-6, "{tso}");
    assert_eq!(Rate::parse("fast", 10.0), None);
    assert_eq!(Rate::parse("-5%", 10.0), None);
}
