//! The bottleneck attribution, both ways: a switch whose poll core is shared
//! with a busy loop pushes back (not generator-bound); a generator slowed on
//! purpose leaves the switch idle and is marked generator-bound.
mod common;

use std::process::Command;
use std::time::Duration;

use bench::gen::{PortOpts, Ring, Size};
use bench::harness::{Scenario, Session};
use bench::peers::{Flavor, SwitchKind};
use common::{generator, setup};
use testbed::Proc;

fn full_load(tag: &str, throttle: Duration) -> bench::gen::GenReport {
    let sc = Scenario::parse("2vm").unwrap();
    let mut s = Session::open(generator(), SwitchKind::Vswitchd(Flavor::RteVhost), &setup(), &sc, 1, tag, PortOpts { mtu: 1500, tso: false, ring: Ring::Split }, 0).expect("session");
    let (rep, _) = s.measure(Size::Fixed(64), None, Duration::from_secs(2), throttle).expect("measure");
    s.close();
    rep
}

#[test]
fn a_starved_switch_is_not_generator_bound() {
    let mut busy = Command::new("taskset");
    busy.args(["-c", "1", "sh", "-c", "while :; do :; done"]);
    let _busy = Proc::spawn("busy-loop", busy).expect("busy loop");
    let rep = full_load("busy", Duration::ZERO);
    assert!(rep.pushed_back > 0, "{rep:?}");
    assert!(!rep.generator_bound(), "{rep:?}");
}

#[test]
fn a_throttled_generator_is_generator_bound() {
    let rep = full_load("slow", Duration::from_micros(300));
    assert_eq!(rep.pushed_back, 0, "{rep:?}");
    assert!(rep.generator_bound(), "{rep:?}");
}
