//! Sleeping until kicked (`pmd_sleep_max_us`, README "Sleeping when
//! idle"): with only copy-once guests to poll, an idle PMD thread sleeps
//! until a guest kicks instead of waking every maximum, and a guest's
//! kick, on a split ring or a packed one, wakes it to forward what the
//! guest sent.
mod common;

use common::*;
use testbed::wait_until;
use vswitch::protocol::{Command, PmdInfo};

fn pmd(sw: &Switchd) -> PmdInfo {
    serde_json::from_value::<Vec<PmdInfo>>(sw.ctl(Command::ShowPmd).result).unwrap().remove(0)
}

/// Waits until the thread has slept until kicked `n` more times: it is
/// then (all but certainly) asleep on the guests' kicks.
fn asleep_again(sw: &Switchd, n: u64) -> PmdInfo {
    let k = pmd(sw).kick_sleeps;
    wait_until(DEADLINE, "the thread sleeping until kicked", || {
        let p = pmd(sw);
        (p.kick_sleeps >= k + n).then_some(p)
    })
    .unwrap()
}

#[test]
fn an_idle_thread_sleeps_until_a_guest_kicks_and_a_kick_wakes_it() {
    const ROUNDS: u32 = 6;
    let dir = tempfile::tempdir().unwrap();
    let ports = ["split", "packed"].map(|n| server_port(n, "copy-once")).concat();
    let sw = Switchd::start(dir.path(), "pmd_sleep_max_us = 500", &ports);
    let split = Vm::connect("split", &dir.path().join("split.sock"), false, 1500);
    let packed = Vm::connect_args("packed", &dir.path().join("packed.sock"), false, 1500, 1, ",packed_vq=1");
    let mut vms = [split, packed];
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let idle = sw.mempool_in_use();
    for (from, to) in [(1, 0), (0, 1)] {
        vms[from].send(&[frame(BCAST, mac(from as u8), None, 64, 0)]);
        assert_eq!(vms[to].recv(1).len(), 1, "{}'s MAC learned", vms[from].name);
    }

    // Asleep until kicked, the thread wakes about ten times a second (the
    // housekeeping timeout), where timed sleeps of 500 us would wake it
    // some two thousand times.
    let before = asleep_again(&sw, 1);
    let after = asleep_again(&sw, 10);
    let sleeps = after.sleeps - before.sleeps;
    assert!(sleeps < 3 * (after.kick_sleeps - before.kick_sleeps) + 20, "{sleeps} sleeps while {} until kicked", after.kick_sleeps - before.kick_sleeps);

    // Each round is sent to a sleeping thread, from one guest then the
    // other: the kick wakes it and every frame arrives.
    let kicked = pmd(&sw).kicked;
    for round in 1..=ROUNDS {
        for (from, to) in [(0, 1), (1, 0)] {
            asleep_again(&sw, 2);
            let frames: Vec<Vec<u8>> = (0..32).map(|i| frame(mac(to as u8), mac(from as u8), None, 64 + 40 * i as usize, round * 100 + i)).collect();
            let started = std::time::Instant::now();
            vms[from].send(&frames);
            let got = vms[to].recv(frames.len());
            eprintln!("round {round}: {} -> {}: {} frames in {:?}", vms[from].name, vms[to].name, got.len(), started.elapsed());
            assert_eq!(got, frames, "round {round}: {} to {}", vms[from].name, vms[to].name);
        }
    }
    // A round can find the thread between two sleeps; most find it asleep.
    let woken = pmd(&sw).kicked - kicked;
    assert!(woken >= u64::from(ROUNDS), "{woken} sleeps ended by a kick in {} rounds", 2 * ROUNDS);
    sw.wait_ports("mempool back to idle", |_| sw.mempool_in_use() == idle);
}
