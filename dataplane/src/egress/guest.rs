//! A guest burst through the egress stage: its unicast frames for a
//! copy-once guest held and delivered together, in one loop, after the
//! burst's pass; every other output one frame at a time.
use pmd_bridge::BURST;

use crate::burst_phases::{self, Phase};
use crate::copy_once::{GuestBurst, GuestPkt};
use crate::counters::{bump, DropReason, Path, ZeroCopy};
use crate::fwd::Decision;
use crate::packet::PacketBuf;
use crate::port_io::TxPort;
use crate::virtio_net::Delivery;
use crate::vlan::TagEdit;

use super::{Egress, Tally, NOT_HELD};

impl Egress<'_> {
    /// A burst still in a copy-once guest's transmit buffers: one payload
    /// copy per output, into another copy-once guest directly or into an
    /// mbuf for any other port; the chains go back after every copy. The
    /// outputs' rings were taken ahead as it was received
    /// (`prefetch_rings`).
    pub fn forward_guest(mut self, in_slot: u16, burst: GuestBurst) {
        let pkts = burst.pkts();
        let mut decisions = [Decision::Drop(DropReason::Malformed); BURST];
        let classified = self.classify(in_slot, pkts.iter(), &mut decisions);
        burst_phases::mark(Phase::Classify);
        if classified.is_none() {
            let (done, _) = self.out.copies.run(None, |_| None);
            burst.commit(&done);
            return;
        }
        let mut burst = burst;
        let mut t = Tally::default();
        // Most bursts are one flow's, for one guest: delivered whole, with
        // nothing held frame by frame, its receive buffers taken a few
        // frames ahead of their writes (`CopyOnceTx::deliver_all`), not all
        // before the first.
        match self.one_output(&decisions[..pkts.len()]) {
            Some(out) => {
                let path = Path::of(true, self.is_vm(out));
                t.forwarded += pkts.len() as u64;
                t.paths[path as usize][0] += pkts.len() as u64;
                self.deliver_frames(&burst, out, 0..pkts.len(), pkts.len(), &mut t);
            }
            None => {
                self.prefetch_buffers(in_slot, &decisions[..pkts.len()], pkts.iter().map(|p| (p.headers().len(), p.frame_len())), false);
                self.route_each(in_slot, &mut burst, &decisions[..pkts.len()], &mut t)
            }
        }
        burst_phases::mark(Phase::Deliver);
        let done = self.finish(Some(burst.sender()), in_slot, &mut t);
        burst_phases::mark(Phase::Finish);
        burst.commit(&done);
        burst_phases::mark(Phase::Commit);
    }

    /// Each frame of a guest burst to its outputs as decided: unicast frames
    /// for a copy-once guest held and delivered together at the end, every
    /// other output at once.
    fn route_each(&mut self, in_slot: u16, burst: &mut GuestBurst, decisions: &[Decision], t: &mut Tally) {
        // The last frame held (its decision, output and path): a frame
        // decided alike is held alike (holding one changes nothing `holds`
        // asks).
        let mut held_like: Option<(Decision, u16, Path)> = None;
        for (i, &d) in decisions.iter().enumerate() {
            if let Some((_, out, path)) = held_like.filter(|&(h, ..)| h == d) {
                t.forwarded += 1;
                t.paths[path as usize][0] += 1;
                self.out.held[i] = out;
                continue;
            }
            match d {
                Decision::Drop(r) => t.drops[r as usize] += 1,
                Decision::Unicast { out, vlan, tagged } => {
                    t.forwarded += 1;
                    let path = Path::of(true, self.is_vm(out));
                    t.paths[path as usize][0] += 1;
                    if self.holds(out, vlan, tagged) {
                        self.out.held[i] = out;
                        self.out.holding.insert(out);
                        held_like = Some((d, out, path));
                    } else {
                        held_like = None;
                        self.emit_guest(burst, i, out, vlan, tagged, path, t);
                    }
                }
                Decision::Flood { vlan, tagged } => {
                    held_like = None;
                    t.flooded += 1;
                    t.paths[Path::Flood as usize][0] += 1;
                    for out in self.flood.targets(vlan, in_slot) {
                        self.emit_guest(burst, i, out, vlan, tagged, Path::Flood, t);
                    }
                }
                // A flow's actions work on an mbuf: the frame copied once.
                // The frames held so far go first: an output's batch that
                // fills is sent at once.
                Decision::Flow(f) => {
                    held_like = None;
                    self.deliver_all_held(burst, t);
                    match burst.materialize(i, &mut self.out.stock, self.pool) {
                        Some(m) => self.run_flow(in_slot, m, f, t),
                        None => t.drops[DropReason::NoMbuf as usize] += 1,
                    }
                }
            }
        }
        self.deliver_all_held(burst, t);
    }

    /// Whether a unicast frame for `out` is held for `deliver_held`: `out`
    /// is a copy-once guest that takes it as it is (no tag change), nothing
    /// captures it, and no frame waits for it as an mbuf (a flow's output,
    /// sent only at `finish`: held frames would overtake it).
    #[inline]
    fn holds(&self, out: u16, vlan: u16, tagged: bool) -> bool {
        self.taps.is_empty()
            && self.guests.contains(out)
            && !self.out.dirty.contains(out)
            && self.ports[out as usize].as_ref().is_some_and(|p| p.vlan.egress_edit(vlan, tagged) == TagEdit::Keep)
    }

    /// The copy-once output that holds every frame of the burst, when the
    /// burst is decided alike throughout (`holds`).
    #[inline]
    fn one_output(&self, decisions: &[Decision]) -> Option<u16> {
        let (&first, rest) = decisions.split_first()?;
        let Decision::Unicast { out, vlan, tagged } = first else { return None };
        (rest.iter().all(|&d| d == first) && self.holds(out, vlan, tagged)).then_some(out)
    }

    fn deliver_all_held(&mut self, burst: &GuestBurst, t: &mut Tally) {
        for out in std::mem::take(&mut self.out.holding) {
            self.deliver_held(burst, out, t);
        }
    }

    /// Delivers the frames held for copy-once output `out`, in order.
    fn deliver_held(&mut self, burst: &GuestBurst, out: u16, t: &mut Tally) {
        self.out.holding = self.out.holding.without(out);
        let mut held = std::mem::take(&mut self.out.held);
        let n = burst.pkts().len();
        let count = held[..n].iter().filter(|&&h| h == out).count();
        // Only this output's entries are cleared: the others' are still to come.
        let frames = (0..n).filter(|&i| {
            let mine = held[i] == out;
            if mine {
                held[i] = NOT_HELD;
            }
            mine
        });
        self.deliver_frames(burst, out, frames, count, t);
        self.out.held = held;
    }

    /// Delivers `frames` (`count` of them, in order) to copy-once output
    /// `out`.
    fn deliver_frames(&mut self, burst: &GuestBurst, out: u16, frames: impl Iterator<Item = usize>, count: usize, t: &mut Tally) {
        let path = Path::of(true, self.is_vm(out));
        let Some(TxPort::CopyOnce(dst)) = self.tx[out as usize].as_mut() else {
            // Not reached (`guests`, which `holds` asks, is this `tx`'s):
            // were it, its frames are dropped, not left for the next burst.
            bump(&self.counters.ports[out as usize].drops[DropReason::PortDown as usize], frames.count() as u64);
            return;
        };
        let pkts = burst.pkts();
        let tx = &mut self.out.guest_tx[out as usize];
        burst.deliver_all(frames, count, dst, &mut self.out.copies, out, |i, d, made| count_delivery(tx, t, path, &pkts[i], d, made));
        self.out.unpublished.insert(out);
    }

    /// One output of frame `i` of a guest burst.
    #[allow(clippy::too_many_arguments)]
    fn emit_guest(&mut self, burst: &mut GuestBurst, i: usize, out: u16, vlan: u16, tagged: bool, path: Path, t: &mut Tally) {
        let Some(port) = self.ports[out as usize].as_ref() else { return };
        let c = &self.counters.ports[out as usize];
        let p = &burst.pkts()[i];
        if port.vlan.egress_edit(vlan, tagged) == TagEdit::Keep {
            // Frames held or batched for it go first: a guest sees its
            // frames in order (only one of the two waits, see `holds`).
            if self.out.holding.contains(out) {
                self.deliver_held(burst, out, t);
            }
            if self.out.dirty.contains(out) {
                self.flush_one(out, t);
            }
            if let Some(TxPort::CopyOnce(dst)) = self.tx[out as usize].as_mut() {
                if !self.taps.is_empty() {
                    self.taps.guest_tx(out, burst, i, &mut self.out.stock, self.pool);
                }
                let (d, frames) = burst.deliver(i, dst, &mut self.out.copies, out);
                count_delivery(&mut self.out.guest_tx[out as usize], t, path, p, d, frames);
                self.out.unpublished.insert(out);
                return;
            }
        }
        // To a NIC: lent from guest memory, no payload copy, where it can be.
        if !port.vm {
            let mut lent = std::mem::take(&mut self.out.lent);
            let outcome = burst.lend(i, out, port.caps, path == Path::Flood, (self.pool, &mut self.out.stock), |m| lent.push(m));
            for m in lent.drain(..) {
                self.emit(out, m, vlan, tagged, path, t);
            }
            self.out.lent = lent;
            match outcome {
                Some(Ok(headers)) => {
                    t.zero_copy[ZeroCopy::Lent as usize] += 1;
                    t.copied(path, 0, headers as u64);
                    return;
                }
                Some(Err(why)) => t.zero_copy[why as usize] += 1,
                None => {}
            }
        }
        // Any other port, or a tag change: the frame in an mbuf (one copy).
        match burst.materialize(i, &mut self.out.stock, self.pool) {
            Some(m) => {
                t.copied(path, 1, p.frame_len() as u64);
                self.emit(out, m, vlan, tagged, path, t);
            }
            None => bump(&c.drops[DropReason::NoMbuf as usize], 1),
        }
    }
}

/// Counts one delivery of guest frame `p` into a copy-once output: its
/// frames, bytes and drops for want of buffers in `tx`, its copy in `t`.
#[inline]
fn count_delivery(tx: &mut [u64; 3], t: &mut Tally, path: Path, p: &GuestPkt, d: Delivery, frames: u32) {
    // A segment cut for this guest went out as `frames` frames, each with
    // the headers again.
    let bytes = p.frame_len() as u64 + p.offload().gso.map_or(0, |g| g.hdr_len() as u64 * frames.saturating_sub(1) as u64);
    match d {
        Delivery::Done { .. } => {
            tx[0] += frames as u64;
            tx[1] += bytes;
            t.copied(path, 1, bytes);
        }
        Delivery::NoBuffers => {
            tx[0] += frames as u64;
            tx[2] += 1;
        }
        Delivery::BadChain(_) => {}
    }
}
