//! The switch's cycles per packet from one copy-once guest to another (the
//! one copy), per frame size, on a thread with an lcore id as a PMD thread
//! has: the rings in plain memory, so none of the machine's other load is
//! in the figure but the thread's own. For A/B of the copy-once path
//! (issue 13) where `vswitch-bench` swings too much between runs. A
//! benchmark, never a test: `cargo bench -p dataplane --bench vm2vm`
//! (needs root for DPDK).
#[path = "../tests/common/zero_copy_rig.rs"]
mod rig;

use pmd_bridge::BURST;
use rig::*;

fn main() {
    const POLLS: usize = 20_000;
    eal();
    let _lcore = pmd_bridge::lcore::current().is_none().then(|| pmd_bridge::lcore::register_thread().unwrap());
    // Guest a (slot 0) to guest b (slot 1), b's MAC learned; nothing lent.
    let mut r = Rig::new("vv", 0, true, 32, u32::MAX, 256);
    let to_b = 0xb;
    r.fdb.learn(1, [2, 0, 0, 0, 0, to_b], 1, 1, 1);
    println!("{:>6} {:>14} {:>8}", "bytes", "cyc/pkt", "min");
    for size in [64usize, 512, 1518] {
        let f = frame(to_b, size, 0);
        let mut samples = Vec::new();
        for _round in 0..9 {
            let (mut cycles, mut pkts) = (0u64, 0usize);
            for poll in 0..POLLS {
                // Alternate halves of the rings: a chain is offered again
                // only after it came back.
                let base = (poll % 2) as u16 * (SIZE / 2);
                let b = r.b.as_mut().expect("guest b");
                for h in base..base + BURST as u16 {
                    b.offer_rx(h);
                    r.a.send_one(h, &f);
                }
                let t0 = pmd_bridge::cycles::tsc();
                pkts += r.poll();
                cycles += pmd_bridge::cycles::tsc() - t0;
            }
            samples.push(cycles as f64 / pkts as f64);
        }
        samples.sort_by(f64::total_cmp);
        println!("{size:>6} {:>14.0} {:>8.0}", samples[samples.len() / 2], samples[0]);
    }
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let (sent, got) = (load(&r.counters.ports[0].rx_packets), load(&r.counters.ports[1].tx_packets));
    let drops: u64 = r.counters.ports.iter().flat_map(|p| p.drops.iter()).map(load).sum();
    assert!(got == sent && drops == 0, "every frame reached guest b: {got} of {sent}, {drops} dropped");
    r.finish();
}
