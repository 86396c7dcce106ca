//! The switch's cycles per packet from a copy-once guest to a NIC that
//! frees at once (net_null), copying against lending, per frame size and
//! for a 64 KB TSO segment, alternated and repeated; the ratios set `zero_copy_min_bytes`'s default
//! (README). A benchmark, never a test: `cargo bench -p dataplane --bench
//! lend` (needs root for DPDK).
#[path = "../tests/common/zero_copy_rig.rs"]
mod rig;

use dataplane::counters::ZeroCopy as Outcome;
use pmd_bridge::BURST;
use rig::*;

fn main() {
    const POLLS: usize = 4000;
    // An lcore id, as a PMD thread has: the pools' caches work.
    eal();
    let _lcore = pmd_bridge::lcore::current().is_none().then(|| pmd_bridge::lcore::register_thread().unwrap());
    let host = 0x50;
    // VERSION_1, MRG_RXBUF, and for the TSO row CSUM and HOST_TSO4.
    let features = 1 << 32 | 1 << 15 | 1 | 1 << 11;
    let mut rigs: Vec<Rig> = [false, true].iter().map(|&lend| Rig::null(if lend { "mz1" } else { "mz0" }, lend, host, features)).collect();
    println!("{:>6} {:>14} {:>14} {:>8}", "bytes", "copy cyc/pkt", "lend cyc/pkt", "ratio");
    // At 64 bytes the header copy is the whole frame: copied either way.
    // The last row is a 64 KB TCP segment, which both cut for the NIC (it
    // has no TSO), summing each frame's checksum: cycles per segment. Four
    // a poll: a burst of them copied would empty the pool.
    let sizes = [64usize, 256, 512, 768, 1024, 1280, 1518, 4000, 9014];
    for size in sizes.map(Some).into_iter().chain([None]) {
        let f = frame(host, size.unwrap_or(64), 0);
        let tso_len = size.is_none().then(|| rigs.iter_mut().map(|r| r.a.write_tso(host)).last().unwrap());
        let (per_poll, polls) = if tso_len.is_some() { (4, POLLS / 8) } else { (BURST as u16, POLLS) };
        let lent_before = rigs[1].outcome(Outcome::Lent);
        let mut samples = [Vec::new(), Vec::new()];
        for _round in 0..9 {
            for (k, r) in rigs.iter_mut().enumerate() {
                let (mut cycles, mut pkts) = (0u64, 0usize);
                for poll in 0..polls {
                    // Alternate halves of the ring: a chain is offered again
                    // only after it came back.
                    let base = (poll % 2) as u16 * (SIZE / 2);
                    for h in base..base + per_poll {
                        match tso_len {
                            Some(len) => r.a.send_tso(h, len),
                            None => r.a.send_one(h, &f),
                        }
                    }
                    let t0 = pmd_bridge::cycles::tsc();
                    pkts += r.poll();
                    cycles += pmd_bridge::cycles::tsc() - t0;
                }
                samples[k].push(cycles as f64 / pkts as f64);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (c, l) = (median(&mut samples[0]), median(&mut samples[1]));
        let label = size.map_or("tso64k".to_string(), |s| s.to_string());
        println!("{label:>6} {c:>14.0} {l:>14.0} {:>8.2}", l / c);
        assert!(size.is_some() || rigs[1].outcome(Outcome::Lent) > lent_before, "the segments lent");
    }
    assert_eq!(rigs[0].outcome(Outcome::Lent), 0, "the copying switch copies");
    assert!(rigs[1].outcome(Outcome::Lent) > 0);
    // The NIC freed the last poll's segments; their chains come back now.
    rigs.iter_mut().for_each(|r| {
        r.poll();
    });
    rigs.into_iter().for_each(Rig::finish);
}
