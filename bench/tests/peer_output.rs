//! The harness reads the peers' own figures from their real output, taken
//! from runs on these machines (VSW_BENCH_RAW=FILE keeps it).
use bench::peers::{parse_fwd_stats, parse_ovs_pmd_stats, FwdTotals};

#[test]
fn ovs_pmd_stats_show() {
    let s = parse_ovs_pmd_stats(include_str!("fixtures/ovs-pmd-stats-show.txt"));
    assert_eq!(s.cycles_per_packet, Some(240.63));
    let idle = s.idle_fraction.unwrap();
    assert!((idle - 321387845.0 / (321387845.0 + 5150056549.0)).abs() < 1e-9, "{idle}");
    assert_eq!(s.flooded, None);
}

/// `show fwd stats all` prints the block testpmd prints at exit.
#[test]
fn testpmd_forward_statistics() {
    let t = parse_fwd_stats(include_str!("fixtures/testpmd-exit.txt")).unwrap();
    assert_eq!(t, FwdTotals { cycles: 8463451650, packets: 31135764, dropped: 11138, tx_packets: 31124626 });
    let s = t.since(&FwdTotals::default());
    assert!((s.cycles_per_packet.unwrap() - 271.82).abs() < 0.01, "{s:?}");
    assert_eq!(parse_fwd_stats("Bye\n"), None);
}
