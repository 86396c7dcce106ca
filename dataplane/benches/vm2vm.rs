//! The switch's cycles per packet from one copy-once guest to another (the
//! one copy), per frame size, and per 64 KB TSO segment delivered whole
//! into 2 KB mergeable buffers (`tso64k`, issue 12's row), on a thread with
//! an lcore id as a PMD thread has: the rings in plain memory, so none of
//! the machine's other load is in the figure but the thread's own. For A/B
//! of the copy-once path (issues 12 and 13) where `vswitch-bench` swings
//! too much between runs. A benchmark, never a test: `cargo bench -p
//! dataplane --bench vm2vm` (needs root for DPDK); `VM2VM_SIZES=60,tso64k`
//! for some rows only (a profile of one); `60p`: 60 bytes on packed rings;
//! `60o`, `60po`: both guests negotiated IN_ORDER, as `vswitch-bench`'s
//! net_virtio_user guests do (Linux's virtio-net does not).
//! Each of several rows runs in a process of its own; a single row runs in
//! this one (as `valgrind` wants).
//! Sizes are the bytes in guest memory: the default rows are the frames
//! `vswitch-bench` calls 64 B and 1518 B, which count an FCS the guest
//! never writes. `VM2VM_POLLS=200` for a run short enough for `valgrind
//! --tool=callgrind` (instructions per packet: steady where cycles swing).
#[path = "../tests/common/zero_copy_rig.rs"]
mod rig;

use dataplane::copy_once::{CopyOnceRx, CopyOnceTx};
use dataplane::offload::{F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_HOST_TSO4};
use dataplane::port_io::TxPort;
use dataplane::virtq::VIRTIO_F_IN_ORDER;
use pmd_bridge::BURST;
use rig::*;

const TO_B: u8 = 0xb;
/// Set in a row's own process: it prints its row without the header.
const ONE_ROW: &str = "VM2VM_ONE_ROW";

fn main() {
    let rows = std::env::var("VM2VM_SIZES").unwrap_or_else(|_| "60,1514,60p,1514p,tso64k".into());
    let rows: Vec<&str> = rows.split(',').map(str::trim).collect();
    if std::env::var_os(ONE_ROW).is_none() {
        println!("{:>6} {:>14} {:>8}", "bytes", "cyc/pkt", "min");
        std::io::Write::flush(&mut std::io::stdout()).expect("stdout");
    }
    if rows.len() > 1 {
        // Each row in a process of its own: in one process the first rig
        // was the fastest at 9000 B (its guest memory's 4 KB pages land
        // elsewhere than a later rig's), which made a row's figure depend
        // on its place in the list.
        for row in rows {
            let status = std::process::Command::new(std::env::current_exe().expect("this bench's path"))
                .args(std::env::args_os().skip(1))
                .env("VM2VM_SIZES", row)
                .env(ONE_ROW, "1")
                .status()
                .expect("a process for the row");
            assert!(status.success(), "row {row}: {status}");
        }
        return;
    }
    eal();
    let _lcore = pmd_bridge::lcore::current().is_none().then(|| pmd_bridge::lcore::register_thread().unwrap());
    let row = rows[0];
    let (median, least) = match row {
        "tso64k" => tso64k(),
        n => {
            let (n, in_order) = n.strip_suffix('o').map_or((n, false), |n| (n, true));
            let (n, packed) = n.strip_suffix('p').map_or((n, false), |n| (n, true));
            frames(n.parse().expect("VM2VM_SIZES: sizes in bytes (p after one: packed rings; o after that: IN_ORDER), or tso64k"), packed, in_order)
        }
    };
    println!("{row:>6} {median:>14.0} {least:>8.0}");
}

/// Guest a (slot 0) to guest b (slot 1), b's MAC learned; nothing lent;
/// both on packed rings if `packed`, both with IN_ORDER if `in_order`.
fn rig(tag: &str, packed: bool, in_order: bool) -> Rig {
    let mut r = Rig::new(tag, 0, true, 32, u32::MAX, 256);
    r.fdb.learn(1, [2, 0, 0, 0, 0, TO_B], 1, 1, 1);
    if packed || in_order {
        let b = r.b.as_mut().expect("guest b");
        for g in [&mut r.a, b] {
            if packed {
                g.use_packed_ring();
            }
            if in_order {
                g.features |= VIRTIO_F_IN_ORDER;
            }
        }
        r.rx = CopyOnceRx::new(r.a.queue(1));
        let b = r.b.as_mut().expect("guest b");
        r.tx[1] = Some(TxPort::CopyOnce(Box::new(CopyOnceTx::new(b.queue(0), 0))));
    }
    r
}

/// Frames of `size` bytes, 32 a poll (`VM2VM_BURST`: fewer, as a switch
/// that keeps up with its guests takes them).
fn frames(size: usize, packed: bool, in_order: bool) -> (f64, f64) {
    let mut r = rig(&format!("vv{size}{}{}", if packed { "p" } else { "" }, if in_order { "o" } else { "" }), packed, in_order);
    let f = frame(TO_B, size, 0);
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|p| p.parse().ok()).unwrap_or(default);
    // Receive buffers as vswitch-bench's guests offer them (`rx_room`):
    // 2 KB, or 4 KB past a 1500-byte MTU, as many a frame as it takes. A
    // poll's buffers fit half the ring, so jumbo frames come fewer a poll.
    let room = if size + HDR > 2048 { 4096 } else { 2048 };
    let per = (size + HDR).div_ceil(room) as u16;
    let (polls, burst) = (env("VM2VM_POLLS", 20_000), env("VM2VM_BURST", BURST).clamp(1, BURST) as u16);
    let burst = burst.min(SIZE / 2 / per);
    // Receive buffers a poll ahead, as a guest that keeps its ring stocked
    // offers them: a split ring knows their heads (from the avail->idx
    // read of the poll before) when it takes them ahead, as it does live.
    // Offered just before their poll, they were taken ahead on packed
    // rings only, whose flags say it.
    // The eight buffers `Rig::new` offers on a split ring are filled
    // first (with short frames, which fit them), so that two polls'
    // buffers fit the ring.
    if !packed {
        let short = frame(TO_B, 60, 0);
        (0..8).for_each(|h| r.a.send_one(h, &short));
        assert_eq!(r.poll(), 8, "the rig's first receive buffers filled");
    }
    let offer_rx = move |r: &mut Rig, base: u16| (base..base + burst * per).for_each(|h| r.b.as_mut().expect("guest b").offer_rx_of(h, room as u32));
    offer_rx(&mut r, 0);
    let result = measure(&mut r, polls, |r, base| {
        offer_rx(r, SIZE / 2 - base);
        for h in base..base + burst {
            r.a.send_one(h, &f);
        }
    });
    check_and_finish(r);
    result
}

/// A 64 KB TCP segment a poll, from a guest with CSUM and HOST_TSO4 to one
/// with GUEST_CSUM and GUEST_TSO4: delivered whole, one copy, into 32
/// receive buffers.
fn tso64k() -> (f64, f64) {
    let mut r = rig("vvtso", false, false);
    r.a.features |= F_CSUM | F_HOST_TSO4;
    r.rx = CopyOnceRx::new(r.a.queue(1));
    let b = r.b.as_mut().expect("guest b");
    b.features |= F_GUEST_CSUM | F_GUEST_TSO4;
    r.tx[1] = Some(TxPort::CopyOnce(Box::new(CopyOnceTx::new(b.queue(0), 0))));
    let len = r.a.write_tso(TO_B);
    let result = measure(&mut r, 10_000, |r, base| {
        let b = r.b.as_mut().expect("guest b");
        (base..base + SIZE / 2).for_each(|h| b.offer_rx(h));
        r.a.send_tso(base, len);
    });
    let got = r.counters.ports[1].tx_bytes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(got > 0 && got.is_multiple_of(len as u64), "whole segments reached guest b: {got} bytes");
    check_and_finish(r);
    result
}

/// Median and least of 9 rounds of `polls` polls, each after `offer(rig,
/// first head)`: the halves of the rings alternate, so a chain is offered
/// again only after it came back.
fn measure(r: &mut Rig, polls: usize, mut offer: impl FnMut(&mut Rig, u16)) -> (f64, f64) {
    let mut samples = Vec::new();
    for round in 0..9 {
        let (mut cycles, mut pkts) = (0u64, 0usize);
        for poll in 0..polls {
            // Halves alternate across rounds too, whatever `polls` is.
            offer(r, ((round * polls + poll) % 2) as u16 * (SIZE / 2));
            let t0 = pmd_bridge::cycles::tsc();
            pkts += r.poll();
            cycles += pmd_bridge::cycles::tsc() - t0;
        }
        samples.push(cycles as f64 / pkts as f64);
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0])
}

fn check_and_finish(r: Rig) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let (sent, got) = (load(&r.counters.ports[0].rx_packets), load(&r.counters.ports[1].tx_packets));
    let drops: u64 = r.counters.ports.iter().flat_map(|p| p.drops.iter()).map(load).sum();
    assert!(got == sent && drops == 0, "every frame reached guest b: {got} of {sent}, {drops} dropped");
    r.finish();
}
