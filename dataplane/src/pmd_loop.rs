//! The poll-mode loop: one per PMD thread, never sleeping, never locking.
//!
//! Per rx burst: receive up to 32 → pass 1 decides every packet (parse,
//! learn, look up: `fwd::decide`) → pass 2 moves each mbuf into its output
//! port's batch (flooding shares the mbuf, a tag edit never writes a shared
//! one) → one send call per output port → counters published once. The
//! plan (ports, queues) arrives by message under the epoch of `quiesce`.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use pmd_bridge::cycles::tsc;
use pmd_bridge::{Burst, Mbuf, Mempool, BURST};

use crate::copy_list::CopyList;
use crate::counters::{bump, count_bad_headers, count_refused, DropReason, Path, PmdCounters, MAX_PORTS};
use crate::mbuf_offload;
use crate::fdb::Fdb;
use crate::fwd::{decide, Decision, PortTable, PortView};
use crate::own_ring::{GuestPkt, OwnRing};
use crate::packet::PacketBuf;
use crate::port_io::{RxPort, TxPort};
use crate::virtio_net::Delivery;
use crate::vlan::TagEdit;
use crate::quiesce::Quiesce;
use crate::tag_edit;

/// One rx queue this thread polls.
pub struct RxSource {
    pub slot: u16,
    pub queue: u16,
    pub port: RxPort,
}

/// Everything a PMD thread polls and sends to. Immutable while in use.
pub struct PmdPlan {
    pub ports: PortTable,
    pub rx: Vec<RxSource>,
    /// How this thread sends to each port slot; None: no queue (port down).
    pub tx: Vec<Option<TxPort>>,
}

impl PmdPlan {
    pub fn empty() -> PmdPlan {
        PmdPlan { ports: Arc::new(vec![None; MAX_PORTS]), rx: Vec::new(), tx: (0..MAX_PORTS).map(|_| None).collect() }
    }

    /// Interrupts copy-once guests are still owed (`OwnRing::retry_call`).
    fn retry_calls(&mut self) {
        for src in &mut self.rx {
            if let RxPort::Own(r) = &mut src.port {
                r.retry_call();
            }
        }
        for t in self.tx.iter_mut().flatten() {
            if let TxPort::Own(r) = t {
                r.retry_call();
            }
        }
    }
}

pub enum PmdMsg {
    Plan(PmdPlan),
    Stop,
}

/// What a PMD thread is given at launch.
pub struct PmdContext {
    pub index: usize,
    pub fdb: Arc<Fdb>,
    pub pool: Arc<Mempool>,
    pub counters: Arc<PmdCounters>,
    pub quiesce: Arc<Quiesce>,
    pub msgs: Receiver<PmdMsg>,
    /// Plans this thread is done with, back to the control thread.
    pub returns: std::sync::mpsc::Sender<PmdPlan>,
    /// Seconds since the switch started, kept by the control thread: the
    /// MAC table's clock, the same for every thread.
    pub clock: Arc<AtomicU32>,
    /// Tests' fault injection: panic once this many iterations have run
    /// and there is a queue to poll (`VSWITCHD_TEST_PMD_PANIC_AFTER`).
    pub panic_after: Option<u64>,
}

#[inline(always)]
fn add(a: [u64; 3], b: [u64; 3]) -> [u64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// Flood targets of one packet, on the stack.
struct TargetList {
    slots: [u16; MAX_PORTS],
    len: usize,
}

impl FromIterator<u16> for TargetList {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut t = TargetList { slots: [0; MAX_PORTS], len: 0 };
        for s in iter.into_iter().take(MAX_PORTS) {
            t.slots[t.len] = s;
            t.len += 1;
        }
        t
    }
}

impl IntoIterator for TargetList {
    type Item = u16;
    type IntoIter = std::iter::Take<std::array::IntoIter<u16, MAX_PORTS>>;
    fn into_iter(self) -> Self::IntoIter {
        self.slots.into_iter().take(self.len)
    }
}

/// Output batches, one per port slot, plus the list of non-empty ones so a
/// flush visits only those.
struct Outputs {
    batches: Vec<Burst>,
    /// The path of each packet in the batch of the same slot.
    paths: Vec<[Path; BURST]>,
    dirty: Vec<u16>,
    /// A frame's bytes while its offloads are done in software, and the
    /// frames that makes (`mbuf_offload::fit`).
    scratch: Vec<u8>,
    made: Vec<Mbuf>,
}

/// Runs the loop until a `Stop` message; returns 0.
pub fn run(ctx: PmdContext) -> i32 {
    let mut plan = PmdPlan::empty();
    let mut out = Outputs {
        batches: (0..MAX_PORTS).map(|_| Burst::new()).collect(),
        paths: vec![[Path::NicNic; BURST]; MAX_PORTS],
        dirty: Vec::with_capacity(MAX_PORTS),
        scratch: Vec::with_capacity(crate::offload::MAX_FRAME),
        made: Vec::with_capacity(64),
    };
    let mut dropped = Burst::new();
    let mut now = ctx.clock.load(Ordering::Relaxed);
    let mut seen = 0;
    let mut iterations: u64 = 0;
    let mut rx = Burst::new();
    let mut guest = [GuestPkt::default(); BURST];
    let mut copies = CopyList::default();
    loop {
        let epoch = ctx.quiesce.current();
        if epoch != seen {
            while let Ok(msg) = ctx.msgs.try_recv() {
                match msg {
                    PmdMsg::Plan(p) => {
                        // The old plan goes back: a copy-once ring's indices
                        // live in it and must outlive this thread's use.
                        let old = std::mem::replace(&mut plan, p);
                        let _ = ctx.returns.send(old);
                    }
                    PmdMsg::Stop => {
                        let _ = ctx.returns.send(plan);
                        ctx.quiesce.ack(ctx.index, epoch);
                        return 0;
                    }
                }
            }
            ctx.quiesce.ack(ctx.index, epoch);
            seen = epoch;
        }
        iterations += 1;
        if iterations.is_multiple_of(1024) {
            now = ctx.clock.load(Ordering::Relaxed);
            bump(&ctx.counters.iterations, 1024);
            plan.retry_calls();
            if let Some(n) = ctx.panic_after.filter(|&n| iterations >= n && !plan.rx.is_empty()) {
                panic!("injected PMD panic after {n} iterations (VSWITCHD_TEST_PMD_PANIC_AFTER)");
            }
        }
        let PmdPlan { ports, rx: sources, tx } = &mut plan;
        for src in sources.iter_mut() {
            let t0 = tsc();
            let n = match &mut src.port {
                RxPort::Own(ring) => {
                    let n = ring.recv_guest(&mut guest);
                    let drops = &ctx.counters.ports[src.slot as usize].drops;
                    count_refused(&mut ring.refused, drops);
                    count_bad_headers(&mut ring.bad_headers, drops);
                    n
                }
                port => port.recv(&ctx.pool, &mut rx),
            };
            if n == 0 {
                bump(&ctx.counters.idle_cycles, tsc() - t0);
                continue;
            }
            let mut eg = Egress { ports, tx, out: &mut out, dropped: &mut dropped, copies: &mut copies, ctx: &ctx, paths: [[0; 3]; 5] };
            match &mut src.port {
                RxPort::Own(ring) => eg.process_guest(src.slot, ring, &guest[..n], now),
                _ => eg.process(src.slot, &mut rx, now),
            }
            let c = &ctx.counters;
            bump(&c.busy_cycles, tsc() - t0);
            bump(&c.packets, n as u64);
            bump(&c.bursts, 1);
        }
    }
}

/// What one burst's processing borrows: the plan's port table (read), its
/// send handles and the output batches (written), and a burst of dropped
/// mbufs freed in one call at the end.
struct Egress<'a> {
    ports: &'a [Option<PortView>],
    tx: &'a mut [Option<TxPort>],
    out: &'a mut Outputs,
    dropped: &'a mut Burst,
    /// The burst's guest-to-guest copies, run before any guest sees them.
    copies: &'a mut CopyList,
    ctx: &'a PmdContext,
    /// Per path: packets, payload copies, bytes copied (published per burst).
    paths: [[u64; 3]; 5],
}

impl Egress<'_> {
    fn process(&mut self, in_slot: u16, rx: &mut Burst, now: u32) {
        let pc = &self.ctx.counters.ports[in_slot as usize];
        let rx_bytes: usize = rx.iter().map(|m| m.len()).sum();
        bump(&pc.rx_packets, rx.len() as u64);
        bump(&pc.rx_bytes, rx_bytes as u64);
        let Some(input) = self.ports[in_slot as usize].as_ref() else {
            // The port was removed under a queue still in this plan.
            bump(&pc.drops[DropReason::PortDown as usize], rx.len() as u64);
            rx.clear();
            return;
        };

        // Pass 1: decide.
        let mut decisions = [Decision::Drop(DropReason::Malformed); BURST];
        let mut unlearned = 0;
        for (d, m) in decisions.iter_mut().zip(rx.iter()) {
            *d = decide(m, input, self.ports, &self.ctx.fdb, now, &mut unlearned);
        }
        bump(&pc.unlearned, unlearned);

        // Pass 2: move.
        let (mut forwarded, mut flooded) = (0u64, 0u64);
        let mut drops = [0u64; DropReason::COUNT];
        let copied_in = input.vm as u64;
        for (m, d) in rx.drain().zip(decisions) {
            let len = m.len() as u64;
            match d {
                Decision::Drop(r) => {
                    drops[r as usize] += 1;
                    self.discard(m);
                }
                Decision::Unicast { out, vlan, tagged } => {
                    forwarded += 1;
                    let path = Path::of(input.vm, self.ports[out as usize].as_ref().is_some_and(|p| p.vm));
                    self.paths[path as usize] = add(self.paths[path as usize], [1, copied_in, copied_in * len]);
                    self.emit(out, m, vlan, tagged, path);
                }
                Decision::Flood { vlan, tagged } => {
                    flooded += 1;
                    self.paths[Path::Flood as usize] = add(self.paths[Path::Flood as usize], [1, copied_in, copied_in * len]);
                    self.flood(in_slot, m, vlan, tagged);
                }
            }
        }

        self.count_rx(in_slot, forwarded, flooded, &drops);
        self.flush_all();
        self.dropped.clear();
        self.publish_paths();
    }

    /// Pass 1 and 2 over frames still in a copy-once guest's transmit ring:
    /// one payload copy each, into another copy-once guest directly or into
    /// an mbuf for any other port; the chains go back after every copy.
    fn process_guest(&mut self, in_slot: u16, src: &mut OwnRing, pkts: &[GuestPkt], now: u32) {
        let pc = &self.ctx.counters.ports[in_slot as usize];
        bump(&pc.rx_packets, pkts.len() as u64);
        bump(&pc.rx_bytes, pkts.iter().map(|p| p.frame_len() as u64).sum());
        let Some(input) = self.ports[in_slot as usize].as_ref() else {
            bump(&pc.drops[DropReason::PortDown as usize], pkts.len() as u64);
            src.complete_rx();
            return;
        };
        let mut decisions = [Decision::Drop(DropReason::Malformed); BURST];
        let mut unlearned = 0;
        for (d, p) in decisions.iter_mut().zip(pkts) {
            *d = decide(p, input, self.ports, &self.ctx.fdb, now, &mut unlearned);
        }
        bump(&pc.unlearned, unlearned);
        for t in self.tx.iter() {
            if let Some(TxPort::Own(dst)) = t {
                dst.prefetch_rx(pkts.len());
            }
        }
        let (mut forwarded, mut flooded) = (0u64, 0u64);
        let mut drops = [0u64; DropReason::COUNT];
        for (i, (p, d)) in pkts.iter().zip(decisions).enumerate() {
            match d {
                Decision::Drop(r) => drops[r as usize] += 1,
                Decision::Unicast { out, vlan, tagged } => {
                    forwarded += 1;
                    let path = Path::of(true, self.ports[out as usize].as_ref().is_some_and(|p| p.vm));
                    self.paths[path as usize][0] += 1;
                    self.emit_guest(src, i, p, out, vlan, tagged, path);
                }
                Decision::Flood { vlan, tagged } => {
                    flooded += 1;
                    self.paths[Path::Flood as usize][0] += 1;
                    for t in self.flood_targets(in_slot, vlan) {
                        self.emit_guest(src, i, p, t, vlan, tagged, Path::Flood);
                    }
                }
            }
        }
        self.count_rx(in_slot, forwarded, flooded, &drops);
        // The listed copies first: an mbuf batch sent into a copy-once
        // guest publishes its used index, entries listed this burst too.
        let tx = &*self.tx;
        let copied = self.copies.run(&src.mem, |out| match tx.get(out as usize) {
            Some(Some(TxPort::Own(dst))) => Some(&*dst.mem),
            _ => None,
        });
        debug_assert!(copied.is_ok(), "a listed copy outside its guests: {copied:?}");
        self.flush_all();
        for t in self.tx.iter_mut() {
            if let Some(TxPort::Own(dst)) = t {
                dst.flush();
            }
        }
        src.complete_rx();
        self.publish_paths();
    }

    /// One output of a frame still in guest `src`'s buffer.
    #[allow(clippy::too_many_arguments)]
    fn emit_guest(&mut self, src: &mut OwnRing, i: usize, p: &GuestPkt, out: u16, vlan: u16, tagged: bool, path: Path) {
        let Some(port) = self.ports[out as usize].as_ref() else { return };
        let c = &self.ctx.counters.ports[out as usize];
        let payload = (p.frame_len() - p.headers().len()) as u64;
        if port.vlan.egress_edit(vlan, tagged) == TagEdit::Keep {
            if let Some(TxPort::Own(dst)) = self.tx[out as usize].as_mut() {
                let (d, frames) = dst.deliver_from(src, i, p, self.copies, out);
                // A segment cut for this guest went out as `frames` frames,
                // each with the headers again.
                let repeated = p.offload().gso.map_or(0, |g| g.hdr_len() as u64 * frames.saturating_sub(1) as u64);
                match d {
                    Delivery::Done { .. } => {
                        bump(&c.tx_packets, frames as u64);
                        bump(&c.tx_bytes, p.frame_len() as u64 + repeated);
                        let pc = &mut self.paths[path as usize];
                        pc[1] += 1;
                        pc[2] += payload;
                    }
                    Delivery::NoBuffers => {
                        bump(&c.tx_packets, frames as u64);
                        bump(&c.drops[DropReason::TxFull as usize], 1);
                    }
                    Delivery::BadChain(_) => count_refused(&mut dst.refused, &c.drops),
                }
                return;
            }
        }
        // Any other port, or a tag change: the frame in an mbuf (one copy).
        match src.materialize(i, p, &self.ctx.pool) {
            Some(m) => {
                let pc = &mut self.paths[path as usize];
                pc[1] += 1;
                pc[2] += p.frame_len() as u64;
                self.emit(out, m, vlan, tagged, path);
            }
            None => bump(&c.drops[DropReason::NoMbuf as usize], 1),
        }
    }

    fn publish_paths(&mut self) {
        for (c, n) in self.ctx.counters.paths.iter().zip(std::mem::take(&mut self.paths)) {
            bump(&c.packets, n[0]);
            bump(&c.payload_copies, n[1]);
            bump(&c.bytes_copied, n[2]);
        }
    }

    /// Publishes one burst's rx dispositions for its input port.
    fn count_rx(&self, in_slot: u16, forwarded: u64, flooded: u64, drops: &[u64; DropReason::COUNT]) {
        let pc = &self.ctx.counters.ports[in_slot as usize];
        bump(&pc.forwarded, forwarded);
        bump(&pc.flooded, flooded);
        for (c, &n) in pc.drops.iter().zip(drops) {
            bump(c, n);
        }
    }

    /// Every other port of the VLAN that can send (a vhost port without a
    /// guest is not part of the flood).
    fn flood_targets(&self, in_slot: u16, vlan: u16) -> TargetList {
        let tx = &*self.tx;
        self.ports
            .iter()
            .flatten()
            .filter(|p| p.slot != in_slot && p.vlan.carries(vlan) && tx[p.slot as usize].is_some())
            .map(|p| p.slot)
            .collect()
    }

    /// Frees `m` with the burst's other drops, in one call.
    #[inline]
    fn discard(&mut self, m: Mbuf) {
        if let Err(m) = self.dropped.push(m) {
            self.dropped.clear();
            let _ = self.dropped.push(m);
        }
    }

    /// Sends one reference of `m` to every flood target; the last output
    /// takes `m` itself, so N outputs cost N-1 reference increments.
    #[inline]
    fn flood(&mut self, in_slot: u16, m: Mbuf, vlan: u16, tagged: bool) {
        let mut targets = self.flood_targets(in_slot, vlan).into_iter();
        let Some(mut prev) = targets.next() else {
            self.discard(m);
            return;
        };
        for next in targets {
            self.emit(prev, m.share(), vlan, tagged, Path::Flood);
            prev = next;
        }
        self.emit(prev, m, vlan, tagged, Path::Flood);
    }

    #[inline]
    fn emit(&mut self, out: u16, m: Mbuf, vlan: u16, tagged: bool, path: Path) {
        let Some(port) = self.ports[out as usize].as_ref() else {
            self.discard(m);
            return;
        };
        let edit = port.vlan.egress_edit(vlan, tagged);
        let m = match tag_edit::apply(m, edit, &self.ctx.pool) {
            Ok(m) => m,
            Err(r) => {
                bump(&self.ctx.counters.ports[out as usize].drops[r as usize], 1);
                return;
            }
        };
        if m.tx_offload().flags == 0 {
            self.enqueue(out, m, path);
            return;
        }
        // Offloads the port cannot take are done here, in software.
        let mut made = std::mem::take(&mut self.out.made);
        if let Err(r) = mbuf_offload::fit(m, port.caps, &self.ctx.pool, &mut self.out.scratch, |seg| made.push(seg)) {
            bump(&self.ctx.counters.ports[out as usize].drops[r as usize], 1);
        }
        for seg in made.drain(..) {
            self.enqueue(out, seg, path);
        }
        self.out.made = made;
    }

    /// Adds `m` to output `out`'s batch, sending the batch first if full.
    #[inline]
    fn enqueue(&mut self, out: u16, m: Mbuf, path: Path) {
        if self.out.batches[out as usize].is_full() {
            // A full batch mid-burst (a flood of many packets): send it now.
            self.out.dirty.retain(|&d| d != out);
            self.flush_one(out);
        }
        let batch = &mut self.out.batches[out as usize];
        if batch.is_empty() {
            self.out.dirty.push(out);
        }
        self.out.paths[out as usize][batch.len()] = path;
        let _ = batch.push(m);
    }

    fn flush_all(&mut self) {
        while let Some(out) = self.out.dirty.pop() {
            self.flush_one(out);
        }
    }

    /// One send call; what the port does not take is dropped and counted.
    fn flush_one(&mut self, out: u16) {
        let batch = &mut self.out.batches[out as usize];
        if batch.is_empty() {
            return;
        }
        let c = &self.ctx.counters.ports[out as usize];
        let Some(tx) = self.tx[out as usize].as_mut() else {
            bump(&c.drops[DropReason::PortDown as usize], batch.len() as u64);
            batch.clear();
            return;
        };
        let mut lens = [0u64; BURST];
        for (l, m) in lens.iter_mut().zip(batch.iter()) {
            *l = m.len() as u64;
        }
        let sent = tx.send(batch);
        if let TxPort::Own(r) = tx {
            count_refused(&mut r.refused, &c.drops);
        }
        let sent_bytes: u64 = lens[..sent].iter().sum();
        bump(&c.tx_packets, sent as u64);
        bump(&c.tx_bytes, sent_bytes);
        bump(&c.drops[DropReason::TxFull as usize], batch.len() as u64);
        batch.clear();
        // Each delivery into a guest through rte_vhost is one payload copy.
        if self.ports[out as usize].as_ref().is_some_and(|p| p.vm) {
            for (&path, &len) in self.out.paths[out as usize].iter().zip(&lens).take(sent) {
                self.paths[path as usize][1] += 1;
                self.paths[path as usize][2] += len;
            }
        }
    }
}
