//! Pass 1 and 2 of a burst, and its end: classify every packet, move each
//! to its outputs (per-port batches of mbufs, or deliveries into copy-once
//! guests with their payload copies listed; a guest burst's unicast frames
//! for one such guest delivered together, in one loop), then finish: send the
//! batches, run the listed copies, publish the copy-once guests' used
//! indices (which takes the proof that the copies ran) and hand the proof
//! back for the sender's chains (`GuestBurst::commit`).
use pmd_bridge::cycles::tsc;
use pmd_bridge::{Burst, Mbuf, Mempool, Stock, BURST};

use crate::capture::Taps;
use crate::copy_list::{CopiesDone, CopyList, Sender};
use crate::counters::{any, bump, DropReason, Path, PmdCounters, ZeroCopy, MAX_PORTS};
use crate::fdb::Fdb;
use crate::flood::{FloodSets, PortSet};
use crate::flow::PmdFlows;
use crate::fwd::{decide, BurstMemo, Decision, PortView};
use crate::mbuf_offload;
use crate::offload::Caps;
use crate::packet::PacketBuf;
use crate::port_io::TxPort;
use crate::tag_edit;
use crate::virtio_net::NET_HDR_LEN;

mod guest;

/// Most bytes of a receive buffer taken ahead: the virtio-net header and a
/// small frame, or a large one's headers.
pub(crate) const PREFETCH_MAX: usize = 128;

const NOT_HELD: u16 = u16::MAX;

/// The slots of `tx` that are copy-once guests: the outputs a burst's
/// prefetches visit, found once a plan rather than by a walk over every
/// slot each burst.
pub fn guest_outputs(tx: &[Option<TxPort>]) -> PortSet {
    let mut set = PortSet::EMPTY;
    tx.iter().enumerate().filter(|(_, t)| t.as_ref().and_then(TxPort::copy_once).is_some()).for_each(|(s, _)| set.insert(s as u16));
    set
}

/// Starts loading the descriptors the copy-once outputs in `guests`, all
/// but `in_slot`, will take `n` frames of `frame_bytes` in all into
/// (`Egress::prefetch_buffers` takes the buffers they point at, after
/// classification): the deliveries then write lines already ours instead
/// of waiting for the guest's core to give up each one. A copy-once
/// guest's burst calls it as soon as its chains are taken, before their
/// headers are read (`CopyOnceRx::recv`), which gives the descriptors that
/// much longer to come in: `poll_ab`, 2vm, against calling it after the
/// header reads, 64 B in a slow state of the machine: split 0.995, 0.991,
/// 0.993, packed 0.995, 0.992, 0.995; 64 and 1518 B in a faster one:
/// split 0.997, 0.995, 0.997, packed 0.994, 0.994, 0.994.
pub fn prefetch_rings(tx: &mut [Option<TxPort>], guests: PortSet, in_slot: u16, n: usize, frame_bytes: u64) {
    for out in guests.without(in_slot) {
        if let Some(TxPort::CopyOnce(t)) = tx[out as usize].as_mut() {
            t.prefetch(n, frame_bytes);
        }
    }
}

/// A PMD thread's output state, allocated once: one batch per port slot,
/// the burst's listed copies, and scratch.
pub struct Outputs {
    batches: Vec<Burst>,
    /// The path of each packet in the batch of the same slot.
    paths: Vec<[Path; BURST]>,
    /// Slots whose batch holds packets.
    dirty: PortSet,
    /// Copy-once outputs holding used entries not yet published, or
    /// counts not yet added (`guest_tx`).
    unpublished: PortSet,
    /// Per copy-once output: frames and bytes delivered, frames dropped
    /// for want of buffers, this burst (counted once at its end).
    guest_tx: [[u64; 3]; MAX_PORTS],
    copies: CopyList,
    /// Per frame of a guest burst: the copy-once output it is held for
    /// (`NOT_HELD`: none), delivered with that output's others in one loop
    /// (`deliver_held`); and the outputs holding any.
    held: [u16; BURST],
    holding: PortSet,
    dropped: Burst,
    /// A frame's bytes while its offloads are done in software, and the
    /// frames that makes (`mbuf_offload::fit`); PACKET_OUTs read.
    pub(crate) scratch: Vec<u8>,
    made: Vec<Mbuf>,
    /// The frames a copy-once frame is lent to a NIC as.
    lent: Vec<Mbuf>,
    /// Fresh mbufs for this burst: copy-once frames copied into them
    /// (captured ones too), lent frames' headers and external segments.
    pub(crate) stock: Stock,
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs {
            batches: (0..MAX_PORTS).map(|_| Burst::new()).collect(),
            paths: vec![[Path::NicNic; BURST]; MAX_PORTS],
            dirty: PortSet::EMPTY,
            unpublished: PortSet::EMPTY,
            guest_tx: [[0; 3]; MAX_PORTS],
            copies: CopyList::default(),
            held: [NOT_HELD; BURST],
            holding: PortSet::EMPTY,
            dropped: Burst::new(),
            scratch: Vec::with_capacity(crate::offload::MAX_FRAME),
            made: Vec::with_capacity(64),
            lent: Vec::with_capacity(128),
            stock: Stock::default(),
        }
    }
}

/// What one burst's processing borrows from its thread and plan.
pub struct Egress<'a> {
    pub ports: &'a [Option<PortView>],
    pub flood: &'a FloodSets,
    pub tx: &'a mut [Option<TxPort>],
    /// The slots of `tx` that are copy-once guests (`guest_outputs`).
    pub guests: PortSet,
    pub out: &'a mut Outputs,
    pub pool: &'a Mempool,
    pub fdb: &'a Fdb,
    pub counters: &'a PmdCounters,
    pub now: u32,
    pub taps: &'a Taps,
    /// The OpenFlow table, if it holds flows (`flow`).
    pub flows: Option<&'a mut PmdFlows>,
}

/// One burst's tallies, published once at its end.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) forwarded: u64,
    flooded: u64,
    pub(crate) drops: crate::counters::PerReason<u64>,
    /// Per path: packets, payload copies, bytes copied.
    pub(crate) paths: [[u64; 3]; 5],
    /// Copy-once frames bound for NICs, by outcome.
    zero_copy: [u64; ZeroCopy::COUNT],
}

impl Tally {
    #[inline]
    fn copied(&mut self, path: Path, copies: u64, bytes: u64) {
        let p = &mut self.paths[path as usize];
        p[1] += copies;
        p[2] += bytes;
    }
}

impl<'a> Egress<'a> {
    /// Pass 1 over a burst of any kind of packet from `in_slot`: counts it
    /// in and decides each packet (None: the port is gone, all dropped).
    fn classify<'p, P: PacketBuf + 'p>(&mut self, in_slot: u16, pkts: impl Iterator<Item = &'p P> + Clone, decisions: &mut [Decision; BURST]) -> Option<&'a PortView> {
        let pc = &self.counters.ports[in_slot as usize];
        let (n, bytes) = pkts.clone().fold((0, 0), |(n, b), p| (n + 1, b + p.frame_len() as u64));
        bump(&pc.rx_packets, n);
        bump(&pc.rx_bytes, bytes);
        let ports = self.ports;
        let Some(input) = ports[in_slot as usize].as_ref() else {
            // The port was removed under a queue still in this plan.
            bump(&pc.drops[DropReason::PortDown as usize], n);
            return None;
        };
        let pass = input.policer.as_ref().map_or(u64::MAX, |p| p.admit(pkts.clone().map(PacketBuf::frame_len), tsc()));
        let mut memo = BurstMemo::default();
        // Without flows, this one branch is all the flow table costs.
        if let Some(f) = self.flows.as_deref_mut() {
            for (i, (d, p)) in decisions.iter_mut().zip(pkts).enumerate() {
                *d = if pass & 1 << i != 0 { f.decide(p, input, ports, self.fdb, self.now, &mut memo) } else { Decision::Drop(DropReason::Policed) };
            }
        } else {
            for (i, (d, p)) in decisions.iter_mut().zip(pkts).enumerate() {
                *d = if pass & 1 << i != 0 { decide(p, input, ports, self.fdb, self.now, &mut memo) } else { Decision::Drop(DropReason::Policed) };
            }
        }
        bump(&pc.unlearned, memo.unlearned);
        Some(input)
    }

    /// The same borrows for a burst within this one (a tunnel's frames).
    pub(crate) fn reborrow(&mut self) -> Egress<'_> {
        let Egress { ports, flood, guests, pool, fdb, counters, now, taps, .. } = *self;
        Egress { ports, flood, tx: &mut *self.tx, guests, out: &mut *self.out, pool, fdb, counters, now, taps, flows: self.flows.as_deref_mut() }
    }

    /// A burst of mbufs from `in_slot`.
    pub fn forward_mbufs(mut self, in_slot: u16, rx: &mut Burst) {
        let ports = self.ports;
        if let Some(u) = ports[in_slot as usize].as_ref().and_then(|p| p.underlay.as_deref()) {
            self.tunnels_in(in_slot, rx, u);
            if rx.is_empty() {
                return;
            }
        }
        prefetch_rings(self.tx, self.guests, in_slot, rx.len(), rx.iter().map(|m| m.len() as u64).sum());
        let mut decisions = [Decision::Drop(DropReason::Malformed); BURST];
        let Some(input) = self.classify(in_slot, rx.iter(), &mut decisions) else {
            rx.clear();
            return;
        };
        self.prefetch_buffers(in_slot, &decisions[..rx.len()], rx.iter().map(|m| (m.len(), m.len())), true);
        // An mbuf from a VM was copied out of it by rte_vhost.
        let copied_in = input.vm as u64;
        let input_vm = input.vm;
        let mut t = Tally::default();
        for (m, &d) in rx.drain().zip(&decisions) {
            let len = m.len() as u64;
            let path = match d {
                Decision::Drop(r) => {
                    t.drops[r as usize] += 1;
                    self.discard(m);
                    continue;
                }
                Decision::Unicast { out, vlan, tagged } => {
                    t.forwarded += 1;
                    let path = Path::of(input_vm, self.is_vm(out));
                    self.emit(out, m, vlan, tagged, path, &mut t);
                    path
                }
                Decision::Flood { vlan, tagged } => {
                    t.flooded += 1;
                    self.flood(in_slot, m, vlan, tagged, &mut t);
                    Path::Flood
                }
                Decision::Flow(i) => {
                    self.run_flow(in_slot, m, i, &mut t);
                    continue;
                }
            };
            t.paths[path as usize][0] += 1;
            t.copied(path, copied_in, copied_in * len);
        }
        let _ = self.finish(None, in_slot, &mut t);
    }

    /// Starts taking, after `prefetch_rings` and classification, the
    /// buffers the copy-once outputs' descriptors point at.
    ///
    /// `written`: each packet's bytes a delivery writes itself (the rest
    /// are listed copies, whose pass takes their lines ahead), and its
    /// frame's length, which says how many receive buffers it fills; each
    /// of those is taken ahead for the bytes written and its virtio-net
    /// header, no more: a line taken and never written is one more the
    /// guest's core gives up, and one fill buffer less for the lines that
    /// are. `mbufs`: a burst of mbufs (`CopyOnceTx::prefetch_buffers`).
    fn prefetch_buffers(&mut self, in_slot: u16, decisions: &[Decision], written: impl Iterator<Item = (usize, usize)>, mbufs: bool) {
        let mut want = [(0u8, 0u8, 0u64); MAX_PORTS];
        let mut add = |out: u16, (bytes, frame): (usize, usize)| {
            let w = &mut want[out as usize];
            w.0 += 1;
            w.1 = w.1.max((NET_HDR_LEN + bytes).min(PREFETCH_MAX) as u8);
            w.2 += frame as u64;
        };
        for (d, bytes) in decisions.iter().zip(written) {
            match *d {
                Decision::Unicast { out, .. } => add(out, bytes),
                Decision::Flood { vlan, .. } => self.flood.targets(vlan, in_slot).for_each(|out| add(out, bytes)),
                // A flow's outputs are known only as its actions run.
                Decision::Drop(_) | Decision::Flow(_) => {}
            }
        }
        for out in self.guests.filter(|&out| want[out as usize].0 > 0) {
            let (n, bytes, frame_bytes) = want[out as usize];
            if let Some(TxPort::CopyOnce(t)) = self.tx[out as usize].as_mut() {
                t.prefetch_buffers(n as usize, frame_bytes, bytes.into(), mbufs);
            }
        }
    }


    #[inline]
    pub(crate) fn is_vm(&self, out: u16) -> bool {
        self.ports[out as usize].as_ref().is_some_and(|p| p.vm)
    }
}

impl Egress<'_> {
    /// Frees `m` with the burst's other drops, in one call.
    #[inline]
    pub(crate) fn discard(&mut self, m: Mbuf) {
        if let Err(m) = self.out.dropped.push(m) {
            self.out.dropped.clear();
            let _ = self.out.dropped.push(m);
        }
    }

    /// Sends one reference of `m` to every flood target; the last output
    /// takes `m` itself, so N outputs cost N-1 reference increments.
    #[inline]
    pub(crate) fn flood(&mut self, in_slot: u16, m: Mbuf, vlan: u16, tagged: bool, t: &mut Tally) {
        let mut targets = self.flood.targets(vlan, in_slot);
        let Some(mut prev) = targets.next() else {
            self.discard(m);
            return;
        };
        for next in targets {
            self.emit(prev, m.share(), vlan, tagged, Path::Flood, t);
            prev = next;
        }
        self.emit(prev, m, vlan, tagged, Path::Flood, t);
    }

    #[inline]
    pub(crate) fn emit(&mut self, out: u16, m: Mbuf, vlan: u16, tagged: bool, path: Path, t: &mut Tally) {
        let Some(port) = self.ports[out as usize].as_ref() else {
            self.discard(m);
            return;
        };
        let m = match tag_edit::apply(m, port.vlan.egress_edit(vlan, tagged), self.pool) {
            Ok(m) => m,
            Err(r) => {
                bump(&self.counters.ports[out as usize].drops[r as usize], 1);
                return;
            }
        };
        self.send_to(out, port.caps, m, path, t);
    }

    /// To output `out` (which takes `caps`) as `m` is.
    #[inline]
    pub(crate) fn send_to(&mut self, out: u16, caps: Caps, m: Mbuf, path: Path, t: &mut Tally) {
        if m.tx_offload().flags == 0 {
            self.enqueue(out, m, path, t);
            return;
        }
        // Offloads the port cannot take are done here, in software.
        let mut made = std::mem::take(&mut self.out.made);
        if let Err(r) = mbuf_offload::fit(m, caps, self.pool, &mut self.out.scratch, |seg| made.push(seg)) {
            bump(&self.counters.ports[out as usize].drops[r as usize], 1);
        }
        for seg in made.drain(..) {
            self.enqueue(out, seg, path, t);
        }
        self.out.made = made;
    }

    /// Adds `m` to output `out`'s batch, sending the batch first if full
    /// (a flood of many packets, a segment cut in many).
    #[inline]
    fn enqueue(&mut self, out: u16, m: Mbuf, path: Path, t: &mut Tally) {
        if self.out.batches[out as usize].is_full() {
            self.flush_one(out, t);
        }
        let batch = &mut self.out.batches[out as usize];
        self.out.dirty.insert(out);
        self.out.paths[out as usize][batch.len()] = path;
        let _ = batch.push(m);
    }

    /// One send call; what the port does not take is dropped and counted.
    /// A copy-once guest's entries wait for `finish` to be published.
    fn flush_one(&mut self, out: u16, t: &mut Tally) {
        self.out.dirty = self.out.dirty.without(out);
        let batch = &mut self.out.batches[out as usize];
        if batch.is_empty() {
            return;
        }
        let c = &self.counters.ports[out as usize];
        if self.tx[out as usize].is_none() {
            bump(&c.drops[DropReason::PortDown as usize], batch.len() as u64);
            batch.clear();
            return;
        }
        let mut lens = [0u64; BURST];
        for (l, m) in lens.iter_mut().zip(batch.iter()) {
            *l = m.len() as u64;
        }
        if !self.taps.is_empty() {
            self.taps.mbufs(out, true, batch);
        }
        let sent = match crate::vxlan::tx::with_underlay(self.tx, out as usize) {
            Some((v, q)) => v.send(batch, q, self.pool, &c.drops),
            None => {
                let tx = self.tx[out as usize].as_mut().expect("checked above");
                if tx.copy_once().is_some() {
                    self.out.unpublished.insert(out);
                }
                tx.send(batch)
            }
        };
        bump(&c.tx_packets, sent as u64);
        bump(&c.tx_bytes, lens[..sent].iter().sum());
        bump(&c.drops[DropReason::TxFull as usize], batch.len() as u64);
        batch.clear();
        // Each delivery into a guest is one payload copy.
        if self.ports[out as usize].as_ref().is_some_and(|p| p.vm) {
            for (&path, &len) in self.out.paths[out as usize].iter().zip(&lens).take(sent) {
                t.copied(path, 1, len);
            }
        }
    }

    /// Ends a burst from `in_slot` (a guest `from` for a copy-once burst):
    /// sends every batch, runs the listed copies, publishes every copy-once
    /// guest written to, then the counts. The proof returned is what gives
    /// the sender's chains back.
    pub(crate) fn finish(&mut self, from: Option<Sender>, in_slot: u16, t: &mut Tally) -> CopiesDone<'_> {
        for out in std::mem::take(&mut self.out.dirty) {
            self.flush_one(out, t);
        }
        self.out.dropped.clear();
        self.out.stock.settle();
        let tx = &mut *self.tx;
        let (done, copied) = self.out.copies.run(from, |out| tx.get(out as usize)?.as_ref()?.copy_once().map(|r| r.mem()));
        debug_assert!(copied.is_ok(), "a listed copy outside its guests: {copied:?}");
        for out in std::mem::take(&mut self.out.unpublished) {
            let c = &self.counters.ports[out as usize];
            let [packets, bytes, full] = std::mem::take(&mut self.out.guest_tx[out as usize]);
            bump(&c.tx_packets, packets);
            bump(&c.tx_bytes, bytes);
            bump(&c.drops[DropReason::TxFull as usize], full);
            if let Some(TxPort::CopyOnce(r)) = tx[out as usize].as_mut() {
                r.publish(&done);
                r.count_refused(&c.drops);
            }
        }
        let pc = &self.counters.ports[in_slot as usize];
        bump(&pc.forwarded, t.forwarded);
        bump(&pc.flooded, t.flooded);
        // Most bursts drop nothing and lend nothing: one test for each,
        // not one a reason (a fixed cost the small bursts of a switch that
        // keeps up would pay many times over).
        if any(&t.drops.0) {
            for (c, &n) in pc.drops.iter().zip(&t.drops) {
                bump(c, n);
            }
        }
        if any(&t.zero_copy) {
            for (c, &n) in self.counters.zero_copy.iter().zip(&t.zero_copy) {
                bump(c, n);
            }
        }
        for (c, n) in self.counters.paths.iter().zip(&t.paths) {
            bump(&c.packets, n[0]);
            bump(&c.payload_copies, n[1]);
            bump(&c.bytes_copied, n[2]);
        }
        done
    }
}
