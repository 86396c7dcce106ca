//! Zero copy VM to NIC through the egress stage, on real DPDK: a copy-once
//! guest (its rings in plain memory, driven by the test as a driver would)
//! sends to `net_ring` ports whose transmit rings the test reads, so the
//! test plays a NIC that holds buffers until it frees them. What leaves, when
//! the guest gets its chains back (out of order, only once every mbuf over
//! them is freed), the in-flight bound, small frames, floods, a guest that
//! rewrites its buffers, and a ring parked while a NIC holds its chains.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dataplane::copy_once::{return_parked, CopyOnceRx, CopyOnceTx, GuestFeatures, GuestPkt, GuestRing, Interrupt, ZeroCopy};
use dataplane::counters::{Path, PmdCounters, ZeroCopy as Outcome, MAX_PORTS};
use dataplane::egress::{Egress, Outputs};
use dataplane::fdb::Fdb;
use dataplane::flood::{FloodSets, PortSet};
use dataplane::fwd::PortView;
use dataplane::port_io::TxPort;
use dataplane::capture::Taps;
use dataplane::virtq::{SplitQueue, Virtqueue};
use dataplane::vlan::VlanMode;
use pmd_bridge::extbuf::Lender;
use pmd_bridge::guest_mem::{GuestMemory, Gpa};
use pmd_bridge::{Burst, Eal, EthPort, Mbuf, Mempool, PortConfig, Ring, RxQueue, BURST};
use testbed::FilePrefix;

const HDR: usize = 12;
const SIZE: u16 = 64;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUFS: u64 = 0x10000;
const BUF: u64 = 0x4000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = FilePrefix::for_process("zero-copy");
        pmd_bridge::log::set_echo(std::env::var_os("VSW_TEST_VERBOSE").is_some());
        Eal::init(&prefix.eal_args(512)).unwrap()
    })
}

/// A guest's ring in plain memory, played by the test.
struct Guest {
    mem: Arc<GuestMemory>,
    avail: u16,
}

impl Guest {
    fn new() -> Guest {
        Guest { mem: Arc::new(GuestMemory::new_owned(&[(0, 0x120000)])), avail: 0 }
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write(Gpa(DESC + 16 * i as u64), &d).unwrap();
    }

    fn offer(&mut self, head: u16) {
        let slot = (self.avail % SIZE) as u64;
        self.mem.write(Gpa(AVAIL + 4 + 2 * slot), &head.to_le_bytes()).unwrap();
        self.avail = self.avail.wrapping_add(1);
        self.mem.store_u16_release(Gpa(AVAIL + 2), self.avail).unwrap();
    }

    /// Transmits `frame` (after a zero virtio-net header) in chain `head`:
    /// the header alone in the first buffer, the frame in the next.
    fn send(&mut self, head: u16, frame: &[u8]) {
        let (a, b) = (BUFS + BUF * head as u64, BUFS + BUF * (head as u64 + SIZE as u64 / 2));
        self.mem.write(Gpa(a), &[0; HDR]).unwrap();
        self.mem.write(Gpa(b), frame).unwrap();
        self.desc(head, a, HDR as u32, NEXT, head + SIZE / 2);
        self.desc(head + SIZE / 2, b, frame.len() as u32, 0, 0);
        self.offer(head);
    }

    /// Offers receive buffer `head` (2 KB).
    fn offer_rx(&mut self, head: u16) {
        self.desc(head, BUFS + BUF * head as u64, 2048, WRITE, 0);
        self.offer(head);
    }

    /// The frame at the front of receive buffer `head`.
    fn received(&self, head: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read(Gpa(BUFS + BUF * head as u64 + HDR as u64), &mut b).unwrap();
        b
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_u16(Gpa(USED + 2)).unwrap()
    }

    /// The heads of used entries `from..to`.
    fn used_heads(&self, from: u16, to: u16) -> Vec<u16> {
        (from..to).map(|i| self.mem.read_u16(Gpa(USED + 4 + 8 * (i % SIZE) as u64)).unwrap()).collect()
    }

    fn queue(&self, vring: u16) -> GuestRing {
        const FEATURES: u64 = 1 << 32 | 1 << 15; // VERSION_1, MRG_RXBUF
        let q = Virtqueue::Split(SplitQueue::new(SIZE, Gpa(DESC), Gpa(AVAIL), Gpa(USED), (0, 0), &self.mem).unwrap());
        GuestRing::new(Arc::clone(&self.mem), q, Interrupt::None, vring, GuestFeatures::from_bits(FEATURES).unwrap())
    }
}

/// A NIC on rings: what the switch sends, the test receives (and holds).
/// Fields drop in order: the queue before its port.
struct Nic {
    rx: RxQueue,
    _reader: EthPort,
    _port: EthPort,
}

/// The switch: guest `a` (slot 0), NICs in slots 1.., guest `b` as the
/// last slot if asked for; a copy-once ring for `a`, lending to the NICs.
struct Rig {
    pool: Arc<Mempool>,
    a: Guest,
    rx: CopyOnceRx,
    ports: Vec<Option<PortView>>,
    tx: Vec<Option<TxPort>>,
    nics: Vec<Nic>,
    b: Option<Guest>,
    flood: FloodSets,
    out: Outputs,
    fdb: Fdb,
    counters: PmdCounters,
    /// A NIC that frees at once (`measure`), kept open.
    _null: Option<EthPort>,
}

/// A ring port for the switch and one that reads its wire, for the test.
fn nic(name: &str, pool: &Arc<Mempool>) -> (EthPort, EthPort) {
    let ring = |n: &str| Arc::new(Ring::new(eal(), &format!("{name}_{n}"), 256).unwrap());
    let (wire, unused) = (ring("w"), ring("u"));
    let start = |mut p: EthPort| {
        p.configure(&PortConfig { mtu: Some(9000), ..Default::default() }, Arc::clone(pool)).unwrap();
        p.start().unwrap();
        p
    };
    let port = start(EthPort::from_rings(eal(), &format!("net_ring_{name}"), &[Arc::clone(&unused)], &[Arc::clone(&wire)]).unwrap());
    let reader = start(EthPort::from_rings(eal(), &format!("net_ring_{name}_r"), &[wire], &[unused]).unwrap());
    (port, reader)
}

impl Rig {
    /// `cache`: the pool's per-lcore cache (only a thread with an lcore
    /// id has one).
    fn new(tag: &str, nics: usize, with_b: bool, bound: u16, min_len: u32, cache: u32) -> Rig {
        let pool = Arc::new(Mempool::new(eal(), tag, 2047, cache, 2048).unwrap());
        let a = Guest::new();
        let mut ports: Vec<Option<PortView>> = vec![None; MAX_PORTS];
        let mut tx: Vec<Option<TxPort>> = (0..MAX_PORTS).map(|_| None).collect();
        ports[0] = Some(PortView::new("a", 0, 1, VlanMode::Access(1), 9000).with_vm(true));
        let mut targets = PortSet::EMPTY;
        let mut rigs = Vec::new();
        for i in 0..nics {
            let slot = 1 + i as u16;
            let (port, reader) = nic(&format!("{tag}{i}"), &pool);
            ports[slot as usize] = Some(PortView::new("nic", slot, 1, VlanMode::Access(1), 9000));
            tx[slot as usize] = Some(TxPort::Eth(port.tx_queue(0).unwrap()));
            targets.insert(slot);
            rigs.push(Nic { rx: reader.rx_queue(0).unwrap(), _reader: reader, _port: port });
        }
        let b = with_b.then(|| {
            let slot = 1 + nics;
            let mut b = Guest::new();
            (0..8).for_each(|h| b.offer_rx(h));
            ports[slot] = Some(PortView::new("b", slot as u16, 1, VlanMode::Access(1), 9000).with_vm(true));
            tx[slot] = Some(TxPort::CopyOnce(Box::new(CopyOnceTx::new(b.queue(0), 0))));
            b
        });
        let zc = ZeroCopy::new(Lender::new(bound), targets, min_len, Arc::new(AtomicU64::new(0)));
        let rx = CopyOnceRx::new(a.queue(1)).with_zero_copy(zc);
        let flood = FloodSets::new(&ports, |s| tx[s as usize].is_some());
        Rig { pool, a, rx, ports, tx, nics: rigs, b, flood, out: Outputs::default(), fdb: Fdb::new(64, 300), counters: PmdCounters::default(), _null: None }
    }

    /// One poll of guest `a`'s transmit ring, forwarded; how many frames.
    fn poll(&mut self) -> usize {
        let mut pkts = [GuestPkt::default(); BURST];
        let drops = Default::default();
        let Some(burst) = self.rx.recv(&mut pkts, &drops) else { return 0 };
        let n = burst.pkts().len();
        let eg = Egress { ports: &self.ports, flood: &self.flood, tx: &mut self.tx, out: &mut self.out, pool: &self.pool, fdb: &self.fdb, counters: &self.counters, now: 1, taps: &Taps::default(), flows: None };
        eg.forward_guest(0, burst);
        n
    }

    /// What NIC `i` holds now, taken off its wire (still held by the test).
    fn take(&mut self, i: usize) -> Vec<Mbuf> {
        let mut b = Burst::<32>::new();
        let mut got = Vec::new();
        while self.nics[i].rx.rx_burst(&mut b) > 0 {
            got.extend(b.drain());
        }
        got
    }

    fn outcome(&self, o: Outcome) -> u64 {
        self.counters.zero_copy[o as usize].load(Ordering::Relaxed)
    }

    fn path(&self, p: Path) -> [u64; 3] {
        let c = &self.counters.paths[p as usize];
        [c.packets.load(Ordering::Relaxed), c.payload_copies.load(Ordering::Relaxed), c.bytes_copied.load(Ordering::Relaxed)]
    }

    /// Everything dropped: the pool must be idle again.
    fn finish(self) {
        let pool = Arc::clone(&self.pool);
        drop(self);
        assert_eq!(pool.in_use_count(), 0, "every mbuf back in the pool");
    }
}

/// A frame to `dst` from the guest's MAC, `len` bytes, numbered `seq`.
fn frame(dst: u8, len: usize, seq: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, 0xa, 0x88, 0xb5];
    f.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seq)));
    f
}

#[test]
fn frames_leave_from_guest_memory_and_chains_return_once_freed_in_any_order() {
    let mut r = Rig::new("zo", 1, false, 32, 256, 0);
    let sizes = [600usize, 1514, 4000, 9014];
    let frames: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| frame(0xff, n, i as u8)).collect();
    for (h, f) in frames.iter().enumerate() {
        r.a.send(h as u16, f);
    }
    assert_eq!(r.poll(), 4);
    assert_eq!(r.a.used_idx(), 0, "nothing back while the NIC holds the chains");
    let mut held = r.take(0);
    assert_eq!(held.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), frames, "intact");
    assert!(held.iter().all(|m| m.nb_segs() == 2), "a header segment and the guest's buffer");
    assert_eq!(r.outcome(Outcome::Lent), 4);
    assert_eq!(r.path(Path::Flood)[1], 0, "no payload copy");
    // Freed 3, 0, 1, 2: the used ring says so, in that order.
    let mut used = 0;
    for k in [3usize, 0, 1, 2] {
        drop(std::mem::replace(&mut held[k], r.pool.alloc().unwrap()));
        r.poll();
        let now = r.a.used_idx();
        assert_eq!(r.a.used_heads(used, now), [k as u16]);
        used = now;
    }
    drop(held);
    r.finish();
}

#[test]
fn small_frames_and_frames_past_the_in_flight_bound_are_copied_and_return_at_once() {
    let mut r = Rig::new("zb", 1, false, 2, 512, 0);
    r.a.send(0, &frame(0xff, 100, 0));
    for h in 1..6 {
        r.a.send(h, &frame(0xff, 1514, h as u8));
    }
    assert_eq!(r.poll(), 6);
    assert_eq!((r.outcome(Outcome::Small), r.outcome(Outcome::Lent), r.outcome(Outcome::InFlightLimit)), (1, 2, 3));
    assert_eq!(r.a.used_heads(0, r.a.used_idx()), [0, 3, 4, 5], "copies return with their burst; 2 chains held");
    assert_eq!(r.path(Path::Flood)[1], 4, "one payload copy each for the copied frames");
    // The ring never starves: the guest goes on sending while the NIC holds.
    for round in 0..3u8 {
        r.a.send(10 + round as u16, &frame(0xff, 1514, round));
        r.poll();
    }
    assert_eq!(r.a.used_idx(), 7);
    let held = r.take(0);
    assert_eq!(held.len(), 9);
    drop(held);
    r.poll();
    assert_eq!(r.a.used_idx(), 9, "the lent chains back once freed");
    r.finish();
}

#[test]
fn a_guest_rewriting_its_buffer_after_sending_changes_only_its_payload() {
    let mut r = Rig::new("zw", 1, false, 8, 256, 0);
    let f = frame(0xff, 1000, 1);
    r.a.send(0, &f);
    r.poll();
    // The guest scribbles over the whole frame, headers and all.
    r.a.mem.write(Gpa(BUFS + BUF * (SIZE as u64 / 2)), &[0xee; 1000]).unwrap();
    let held = r.take(0);
    let out = held[0].to_vec();
    assert_eq!(out[..64], f[..64], "the headers the switch decided on");
    assert_eq!(out[64..], [0xee; 936], "the payload is the guest's own (no copy was made)");
    drop(held);
    r.finish();
}

#[test]
fn a_flood_lends_one_chain_to_every_nic_and_copies_into_the_guest() {
    let mut r = Rig::new("zf", 2, true, 8, 256, 0);
    let f = frame(0xff, 1514, 5);
    r.a.send(0, &f);
    r.poll();
    let b = r.b.as_ref().unwrap();
    assert_eq!((b.used_idx(), b.received(0, f.len())), (1, f.clone()), "the guest output: the copy-once copy");
    let (x, y) = (r.take(0), r.take(1));
    assert_eq!((x[0].to_vec(), y[0].to_vec()), (f.clone(), f.clone()));
    assert_eq!(r.outcome(Outcome::Lent), 2);
    assert_eq!(r.path(Path::Flood)[1], 1, "one payload copy: the guest's");
    drop(x);
    r.poll();
    assert_eq!(r.a.used_idx(), 0, "the other NIC still holds it");
    drop(y);
    r.poll();
    assert_eq!(r.a.used_heads(0, r.a.used_idx()), [0]);
    r.finish();
}

#[test]
fn a_ring_parked_while_a_nic_holds_its_chains_returns_them_from_the_control_thread() {
    let mut r = Rig::new("zp", 1, false, 8, 256, 0);
    r.a.send(0, &frame(0xff, 2000, 0));
    r.a.send(1, &frame(0xff, 3000, 1));
    r.poll();
    // A replan takes the ring back: its lender goes along, chains out.
    let rx = std::mem::replace(&mut r.rx, CopyOnceRx::new(r.a.queue(1)));
    let (ring, lender) = rx.into_parts();
    let mut lender = lender.unwrap();
    let (_, mut queue) = ring.into_queue();
    assert_eq!(lender.in_flight(), 2);
    assert_eq!(return_parked(&mut lender, &mut queue), None, "nothing freed yet");
    let held = r.take(0);
    assert_eq!(Arc::strong_count(&r.a.mem), 3, "the memory is held while chains are out");
    drop(held);
    assert_eq!(return_parked(&mut lender, &mut queue), Some(true), "published; the guest asked to be interrupted");
    assert_eq!(r.a.used_idx(), 2);
    assert!(lender.memory().is_none(), "the memory let go");
    r.finish();
}

/// Not a test of speed (nothing is asserted): the switch's cycles per
/// packet from a copy-once guest to a NIC that frees at once (net_null),
/// copying against lending, per frame size, alternated and repeated; the
/// ratios set `zero_copy_min_bytes`'s default (README). Run with
/// `cargo test --release -p dataplane --test zero_copy -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_copy_against_lend() {
    const POLLS: usize = 4000;
    // An lcore id, as a PMD thread has: the pools' caches work.
    eal();
    let _lcore = pmd_bridge::lcore::current().is_none().then(|| pmd_bridge::lcore::register_thread().unwrap());
    let host = 0x50;
    let mut rigs: Vec<Rig> = [false, true].iter().map(|&lend| Rig::null(if lend { "mz1" } else { "mz0" }, lend, host)).collect();
    println!("{:>6} {:>14} {:>14} {:>8}", "bytes", "copy cyc/pkt", "lend cyc/pkt", "ratio");
    // At 64 bytes the header copy is the whole frame: copied either way.
    for size in [64usize, 256, 512, 768, 1024, 1280, 1518, 4000, 9014] {
        let f = frame(host, size, 0);
        let mut samples = [Vec::new(), Vec::new()];
        for _round in 0..9 {
            for (k, r) in rigs.iter_mut().enumerate() {
                let (mut cycles, mut pkts) = (0u64, 0usize);
                for poll in 0..POLLS {
                    // Alternate halves of the ring: a chain is offered again
                    // only after it came back.
                    let base = (poll % 2) as u16 * (SIZE / 2);
                    for h in base..base + BURST as u16 {
                        r.a.send_one(h, &f);
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
        println!("{size:>6} {c:>14.0} {l:>14.0} {:>8.2}", l / c);
    }
    assert_eq!(rigs[0].outcome(Outcome::Lent), 0, "the copying switch copies");
    assert!(rigs[1].outcome(Outcome::Lent) > 0);
    rigs.into_iter().for_each(Rig::finish);
}

impl Guest {
    /// Transmits `f` in chain `head` as one buffer, header and frame.
    fn send_one(&mut self, head: u16, f: &[u8]) {
        let at = BUFS + BUF * head as u64;
        self.mem.write(Gpa(at), &[0; HDR]).unwrap();
        self.mem.write(Gpa(at + HDR as u64), f).unwrap();
        self.desc(head, at, (HDR + f.len()) as u32, 0, 0);
        self.offer(head);
    }
}

impl Rig {
    /// Guest `a` unicast to a net_null NIC (slot 1, host `host` learned
    /// there), lending (`lend`, any size) or always copying.
    fn null(tag: &str, lend: bool, host: u8) -> Rig {
        let mut r = Rig::new(tag, 0, false, 32, 0, 256);
        let mut port = EthPort::open(eal(), &format!("net_null_{tag}")).unwrap();
        port.configure(&PortConfig { mtu: Some(9000), ..Default::default() }, Arc::clone(&r.pool)).unwrap();
        port.start().unwrap();
        r.ports[1] = Some(PortView::new("null", 1, 1, VlanMode::Access(1), 9000));
        r.tx[1] = Some(TxPort::Eth(port.tx_queue(0).unwrap()));
        r._null = Some(port);
        r.flood = FloodSets::new(&r.ports, |s| r.tx[s as usize].is_some());
        r.fdb.learn(1, [2, 0, 0, 0, 0, host], 1, 1, 1);
        let mut targets = PortSet::EMPTY;
        targets.insert(1);
        r.rx = CopyOnceRx::new(r.a.queue(1));
        if lend {
            r.rx = CopyOnceRx::new(r.a.queue(1)).with_zero_copy(ZeroCopy::new(Lender::new(32), targets, 0, Arc::default()));
        }
        r
    }
}
