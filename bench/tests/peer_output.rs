//! The harness reads the peers' own figures from their real output, taken
//! from runs on these machines (VSW_BENCH_RAW=FILE keeps it).
use bench::peers::{parse_ovs_pmd_stats, parse_testpmd_exit};

#[test]
fn ovs_pmd_stats_show() {
    let s = parse_ovs_pmd_stats(include_str!("fixtures/ovs-pmd-stats-show.txt"));
    assert_eq!(s.cycles_per_packet, Some(240.63));
    let idle = s.idle_fraction.unwrap();
    assert!((idle - 321387845.0 / (321387845.0 + 5150056549.0)).abs() < 1e-9, "{idle}");
    assert_eq!(s.flooded, None);
}

#[test]
fn testpmd_exit_statistics() {
    let s = parse_testpmd_exit(include_str!("fixtures/testpmd-exit.txt"));
    assert_eq!(s.cycles_per_packet, Some(271.82));
    assert_eq!(s.dropped, Some(11138));
    assert_eq!(parse_testpmd_exit("Bye\n"), Default::default());
}
