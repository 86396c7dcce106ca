//! A guest's receive ring, which the switch sends into.
use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::Burst;

use super::line_clock::LineClock;
use super::{payload_sum, GuestPkt, GuestRing, HEAD};
use crate::copy_list::{CopiesDone, CopyList};
use crate::egress::PREFETCH_MAX;
use crate::mbuf_offload;
use crate::offload::{complete_partial, NetHdr, Offload, Segmenter};
use crate::packet::PacketBuf;
use crate::virtio_net::{deliver, fill_short, lay, take_short, write_short, Delivery, FrameSource, Short, MAX_BUFFERS, NET_HDR_LEN};
use crate::virtq::{Chain, Direction, RingOps, UsedAhead, MAX_READ};

/// The most receive buffers a burst takes ahead (and prefetches): room
/// for a full burst of jumbo frames into 4 KB buffers (three each), not
/// for one of 64 KB segments into 2 KB buffers (a thousand).
const MAX_AHEAD: usize = 4 * pmd_bridge::BURST;
const _: () = assert!(MAX_AHEAD >= MAX_BUFFERS, "the chains taken ahead are also `deliver`'s scratch");

/// How many receive chains ahead of its writes `deliver_all` takes their
/// buffers for writing. Lines the receiver's core holds, asked for all at
/// once (a burst's 32 frames, two lines each, before the first write),
/// queue behind the few the core can have in flight, and the first writes
/// wait behind the last requests. `poll_ab` 2vm 64 B, against every buffer
/// of the burst taken before its writes: split 0.92-0.97, packed 0.77-0.96
/// (8 ahead; 4, 6, 12 and 16 much alike).
const WRITE_AHEAD: usize = 8;

/// While `send`'s window runs (`CopyOnceTx::send_ahead`), how many more
/// receive chains it takes for writing at a time, once at most
/// `WRITE_AHEAD - SEND_STEP` are left taken ahead.
const SEND_STEP: usize = 4;

/// The receive buffers of `room` bytes (the first the last stock took)
/// that `n` frames of `frame_bytes` in all fill, each as many as the
/// average frame does: `n` while a frame fits one. Past that (jumbo frames
/// into 4 KB buffers), the header of each frame past the first few went
/// into a buffer not taken ahead, and the burst's later stores queued
/// behind it. `vswitch-bench` 2vm 9000 B, polls picked at random to one
/// way or the other (`poll_ab`): taking them all ahead saves 10–16% of the
/// cycles a packet on split rings and 4–10% on packed in a slow state of
/// the machine, and costs 0.4–0.8% in a fast one.
fn buffers_for(n: usize, frame_bytes: u64, room: u64) -> usize {
    // At least one frame: bytes counted for none are a caller's slip,
    // worth no division by zero here.
    let (bytes, frames, room) = (frame_bytes + (n * NET_HDR_LEN) as u64, (n as u64).max(1), room.max(1));
    if bytes <= frames.saturating_mul(room) {
        return n;
    }
    (frames * bytes.div_ceil(frames).div_ceil(room)).min(MAX_AHEAD as u64) as usize
}

pub struct CopyOnceTx {
    ring: GuestRing,
    /// Deliveries tried again while the guest's receive ring is full
    /// (`[switch] vhost_retries`).
    retries: u32,
    /// Receive chains of the frame being delivered (scratch); in
    /// `deliver_all`, those taken ahead for its frames.
    chains: Vec<Chain>,
    /// `(at, end)`: the chains taken ahead and not yet used are
    /// `chains[at..end]`; none outside `deliver_all`. They are the last
    /// chains popped, so they go back with one `unpop`, before anything
    /// else pops.
    stock: (usize, usize),
    /// The bytes written into each chain taken ahead, by index in `chains`,
    /// until their used entries are added together (`add_filled`).
    filled: Vec<u32>,
    /// The bytes of the first chain the last stock took: a burst whose
    /// first frame would not fit one (a jumbo frame into 2 KB buffers)
    /// takes none, which it would give back at that frame.
    stock_room: u64,
    /// Used entries written and not yet published.
    unpublished: bool,
    /// How many of the next receive chains `prefetch_buffers` took the
    /// buffers of, until this burst's `deliver_all` or `publish`.
    buffers_ahead: usize,
    /// For a burst of mbufs while lines are slow: how many of the next
    /// receive chains have their buffers taken for writing, and how many
    /// bytes of each; `send` takes more as it delivers.
    send_ahead: Option<(usize, u64)>,
    /// How far away the guest's core is, from timings of avail->idx
    /// (split rings; a packed ring's availability is read slot by slot, by
    /// the pops, and its receive buffers are always taken a burst at once).
    clock: LineClock,
    /// A frame's bytes: a multi-segment mbuf's, or a sender's payload being
    /// summed.
    scratch: Vec<u8>,
}

impl CopyOnceTx {
    pub fn new(ring: GuestRing, retries: u32) -> CopyOnceTx {
        CopyOnceTx { ring, retries, chains: vec![Chain::default(); MAX_AHEAD], stock: (0, 0), filled: vec![0; MAX_AHEAD], stock_room: u64::MAX, unpublished: false, buffers_ahead: 0, send_ahead: None, clock: LineClock::default(), scratch: Vec::with_capacity(MAX_READ as usize) }
    }

    pub fn into_ring(self) -> GuestRing {
        self.ring
    }

    pub fn mem(&self) -> &GuestMemory {
        &self.ring.mem
    }

    /// Delivers an interrupt the guest is owed; whether one still is.
    pub fn retry_call(&mut self) -> bool {
        self.ring.retry_call()
    }

    pub fn count_refused(&mut self, drops: &[std::sync::atomic::AtomicU64; crate::counters::DropReason::COUNT]) {
        self.ring.count_refused(drops);
    }

    /// Starts loading the receive descriptors the next `n` deliveries, of
    /// frames of `frame_bytes` in all, will take (their heads are already
    /// known available).
    pub fn prefetch(&mut self, n: usize, frame_bytes: u64) {
        if !self.ring.broken {
            // Timed before `prefetch_next` takes the line ahead: after it,
            // every timing read fast and the window never ran.
            if let Some(cycles) = self.clock.due().then(|| self.ring.queue.time_avail(&self.ring.mem)).flatten() {
                self.clock.add(cycles);
            }
            self.ring.queue.prefetch_next(&self.ring.mem, buffers_for(n, frame_bytes, self.stock_room), UsedAhead::Each);
        }
    }

    /// Starts taking the first `bytes` bytes of the receive buffers the
    /// next `n` deliveries, of frames of `frame_bytes` in all, will fill,
    /// for writing (after `prefetch`, once their descriptors have come in).
    ///
    /// `mbufs`: for a burst of mbufs, which `send` delivers. While lines
    /// are slow, it takes only the first `WRITE_AHEAD` chains' buffers
    /// here, and `send` the next ones as it delivers: a burst's 32 taken
    /// at once queue behind the few requests the core has in flight, as in
    /// `deliver_all`. `poll_ab` nic-vm, split rings, a window of 8 against
    /// the whole burst: slow 0.86-0.89 (64 B, 1518 B), fast 1.023-1.049,
    /// which the whole burst keeps. As landed, against the whole burst in
    /// every state: slow 0.961, 0.967, fast 0.991-0.998 (the clock misses
    /// part of the slow time).
    pub fn prefetch_buffers(&mut self, n: usize, frame_bytes: u64, bytes: u64, mbufs: bool) {
        if self.ring.broken {
            return;
        }
        let want = buffers_for(n, frame_bytes, self.stock_room);
        if mbufs && self.clock.slow() {
            self.send_ahead = Some((self.ring.queue.prefetch_buffers(&self.ring.mem, 0..want.min(WRITE_AHEAD), bytes), bytes));
        } else {
            self.send_ahead = None;
            self.buffers_ahead = self.ring.queue.prefetch_buffers(&self.ring.mem, 0..want, bytes);
        }
    }

    /// `send`'s window: the next `SEND_STEP` chains' buffers taken for
    /// writing once few are left taken ahead of the next delivery.
    #[inline]
    fn send_step(&mut self) {
        if let Some((ahead, bytes)) = self.send_ahead.filter(|&(ahead, _)| ahead <= WRITE_AHEAD - SEND_STEP) {
            self.send_ahead = Some((self.ring.queue.prefetch_buffers(&self.ring.mem, ahead..ahead + SEND_STEP, bytes), bytes));
        }
    }

    /// `send`'s window moved past the `used` chains a delivery took.
    #[inline]
    fn send_took(&mut self, used: usize) {
        if let Some((ahead, _)) = self.send_ahead.as_mut() {
            *ahead = ahead.saturating_sub(used);
        }
    }

    /// Publishes the used entries written since the last call, once their
    /// payload copies have run (`done`), and interrupts the guest once.
    pub fn publish(&mut self, done: &CopiesDone) {
        // Buffers taken ahead for frames delivered one by one (a flood, a
        // burst of mbufs) count for no later burst's `deliver_all`.
        self.buffers_ahead = 0;
        if std::mem::take(&mut self.unpublished) {
            self.ring.publish(done);
        }
    }

    /// Delivers a frame in guest memory `src` (`chain`, after its headers
    /// in `pkt`) into this guest (output port `out`): the headers from
    /// scratch, the payload listed in `copies` for its one copy, guest to
    /// guest, before `publish`.
    ///
    /// The frame's offloads go along when this guest takes them; otherwise
    /// the switch does their work here: a TCP segment is cut into frames of
    /// one MSS, each still one copy guest to guest, and a partial checksum
    /// is finished from the sender's bytes. Returns the delivery and the
    /// frames it made (more than one for a segment cut here).
    #[inline(always)]
    pub fn deliver_from(&mut self, src: &GuestMemory, chain: &Chain, pkt: &GuestPkt, copies: &mut CopyList, out: u16) -> (Delivery, u32) {
        // Most frames go as they came, into one receive chain: the short way.
        let mut taken = 0;
        if !self.ring.broken && pkt.off.fits(self.ring.features.rx) {
            let frame = plain(src, chain, pkt);
            // Chains taken ahead are `deliver_all`'s: one popped now, into
            // `chains[0]`, which the long way takes as its first.
            let short = match take_short(&mut self.ring.queue, &self.ring.mem, NET_HDR_LEN as u64 + frame.len(), &mut self.chains[0]) {
                Ok(Ok(())) => fill_short(&mut self.ring.queue, &self.ring.mem, &frame, &self.chains[0], (&mut *copies, out)),
                Ok(Err(s)) => Ok(s),
                Err(e) => Err(e),
            };
            match short {
                Ok(Short::Long(n)) => taken = usize::from(n),
                Ok(Short::Done(d)) => return (self.settle(Ok(d)), 1),
                Err(e) => return (self.settle(Err(e)), 1),
            }
        }
        // The long way pops: the chains taken ahead after this frame's go
        // back first.
        self.give_back();
        self.deliver_long(src, chain, pkt, copies, out, taken)
    }

    /// Frames of a burst in guest memory `src` into this guest (output port
    /// `out`), in order, each as `deliver_from` delivers it but in one loop:
    /// `frames` gives each one's index, chain and headers; `each(i,
    /// delivery, frames made)`.
    /// `count`: how many frames there are, for which receive chains are
    /// taken ahead in one go (`pop_singles`).
    #[allow(clippy::too_many_arguments)]
    pub fn deliver_all<'c>(
        &mut self,
        src: &GuestMemory,
        frames: impl Iterator<Item = (usize, &'c Chain, &'c GuestPkt)>,
        count: usize,
        copies: &mut CopyList,
        out: u16,
        mut each: impl FnMut(usize, Delivery, u32),
    ) {
        let mut frames = frames.peekable();
        let mergeable = self.ring.features.mergeable;
        // As many chains as the frames fill, each as many as the first
        // (one where it fits; a jumbo frame's three into mergeable 4 KB
        // buffers), so the long way pops none of them one at a time. None
        // past one a frame for frames whose offloads are done here: the
        // long way cuts them into frames of its own and pops for those.
        let want = frames.peek().map_or(0, |f| {
            let need = NET_HDR_LEN as u64 + u64::from(f.2.len);
            if need <= self.stock_room || (mergeable && f.2.off.fits(self.ring.features.rx)) {
                buffers_for(count, count as u64 * u64::from(f.2.len), self.stock_room)
            } else {
                0
            }
        });
        if want > 0 && !self.ring.broken {
            let taken = self.ring.queue.pop_singles(&self.ring.mem, Direction::DeviceWrites, &mut self.chains[..want.min(MAX_AHEAD)]);
            if taken > 0 {
                self.stock_room = self.chains[0].len();
            }
            self.stock = (0, taken);
        }
        // The first `WRITE_AHEAD` chains' buffers are taken for writing now,
        // each next one as a frame is written (those `prefetch_buffers`
        // took already skipped).
        let lead = frames.peek().map_or(0, |f| NET_HDR_LEN + f.2.headers().len()).min(PREFETCH_MAX);
        let mut ahead = std::mem::take(&mut self.buffers_ahead);
        self.take_for_writing(next_ahead(&mut ahead, self.stock.1.min(WRITE_AHEAD)), lead);
        // The chains taken ahead and filled from here on: their used
        // entries are added together, in ring order, before anything else
        // adds one (the long way, which may also swap `chains[0]` out).
        let mut run = self.stock.0;
        for (i, chain, pkt) in frames {
            let at = self.stock.0;
            self.take_for_writing(next_ahead(&mut ahead, self.stock.1.min(at + WRITE_AHEAD)), lead);
            if at < self.stock.1 && !self.ring.broken && pkt.off.fits(self.ring.features.rx) {
                match write_short(&self.ring.mem, &plain(src, chain, pkt), &self.chains[at], (&mut *copies, out)) {
                    Ok(Some((len, guest_copies))) => {
                        self.filled[at] = len;
                        self.stock.0 += 1;
                        each(i, Delivery::Done { buffers: 1, guest_copies }, 1);
                        continue;
                    }
                    Ok(None) => {
                        // Over several chains taken ahead, when they hold it.
                        if let Some(d) = mergeable.then(|| self.lay_ahead(src, chain, pkt, copies, out)).flatten() {
                            each(i, d, 1);
                            continue;
                        }
                        // Not the short way: the long way takes it, the
                        // chain taken ahead as its first (the run's entries
                        // added before `chains[0]` is swapped out).
                        self.add_filled(run);
                        self.stock.0 += 1;
                        self.chains.swap(0, at);
                        self.give_back();
                        let (d, n) = self.deliver_long(src, chain, pkt, copies, out, 1);
                        run = self.stock.0;
                        each(i, d, n);
                        continue;
                    }
                    Err(e) => {
                        self.add_filled(run);
                        each(i, self.settle(Err(e)), 1);
                        run = self.stock.0;
                        continue;
                    }
                }
            }
            self.add_filled(run);
            let (d, n) = self.deliver_from(src, chain, pkt, copies, out);
            run = self.stock.0;
            each(i, d, n);
        }
        self.add_filled(run);
        self.give_back();
    }

    /// Starts taking, for writing, the first `bytes` of the first buffer of
    /// the chains `range` taken, which the loop then writes the frames'
    /// virtio-net headers and headers into. A store into a line still in
    /// the guest's core holds up every store behind it (poll_ab, 2vm split
    /// 64 B, against none taken: 0.904, 0.905; in the machine's slow
    /// state, the frame loop's cycles had grown 4.6 times).
    fn take_for_writing(&self, range: std::ops::Range<usize>, bytes: usize) {
        for c in self.chains.get(range).unwrap_or_default() {
            if let Some(first) = c.segments().first() {
                self.ring.mem.prefetch_span(first, 0, (first.len() as usize).min(bytes), true);
            }
        }
    }

    /// A frame too long for one receive chain laid over as many of those
    /// taken ahead as it fills (mergeable buffers), from the next on; None
    /// leaves it to the long way, when too few are left.
    fn lay_ahead(&mut self, src: &GuestMemory, chain: &Chain, pkt: &GuestPkt, copies: &mut CopyList, out: u16) -> Option<Delivery> {
        let (at, end) = self.stock;
        let need = NET_HDR_LEN as u64 + u64::from(pkt.len);
        let mut room = 0;
        let k = self.chains[at..end.min(at + MAX_BUFFERS)].iter().position(|c| {
            room += c.len();
            room >= need
        })? + 1;
        let chains = &self.chains[at..at + k];
        let laid = lay(&self.ring.mem, &plain(src, chain, pkt), chains, Some((copies, out))).map(|(fill, guest_copies)| {
            for (j, c) in chains.iter().enumerate() {
                self.filled[at + j] = fill.used(j, c) as u32;
            }
            self.stock.0 += k;
            Delivery::Done { buffers: k as u16, guest_copies }
        });
        Some(self.settle(laid))
    }

    /// Adds the used entries of the chains taken ahead and filled since
    /// `chains[from]`, in one pass.
    fn add_filled(&mut self, from: usize) {
        let to = self.stock.0;
        if from < to {
            let entries = self.chains[from..to].iter().zip(&self.filled[from..to]).map(|(c, &len)| (c.head, len));
            // Those added before a store failed are published all the same.
            self.unpublished = true;
            if self.ring.queue.add_used_all(&self.ring.mem, entries).is_err() {
                self.ring.broken = true;
            }
        }
    }

    /// Gives back the chains taken ahead and not used.
    #[inline]
    fn give_back(&mut self) {
        let (at, end) = std::mem::take(&mut self.stock);
        if let Some(back) = self.chains.get(at..end).filter(|b| !b.is_empty()) {
            self.ring.queue.unpop(back);
        }
    }

    /// `deliver_from` the general way: over several receive chains (the
    /// first `taken` already, by the short way), or with offloads this
    /// guest does not take done here.
    fn deliver_long(&mut self, src: &GuestMemory, chain: &Chain, pkt: &GuestPkt, copies: &mut CopyList, out: u16, taken: usize) -> (Delivery, u32) {
        if self.ring.broken {
            return (Delivery::NoBuffers, 0);
        }
        if pkt.off.fits(self.ring.features.rx) {
            return (self.deliver_one(&plain(src, chain, pkt), taken, Some((copies, out))), 1);
        }
        debug_assert_eq!(taken, 0, "the short way takes no chain for a frame whose offloads are done here");
        let h = pkt.head_len as usize;
        let tail = |from: usize, len: usize| (len > 0).then_some((src, chain, (NET_HDR_LEN + from) as u64, len as u64));
        let Some(gso) = pkt.off.gso else {
            // A partial checksum this guest cannot finish: finish it here,
            // over the header copy and the sender's bytes past it.
            let mut head = [0u8; HEAD];
            head[..h].copy_from_slice(pkt.headers());
            let Some(csum) = pkt.off.csum else { return (Delivery::NoBuffers, 0) };
            let Some(rest) = payload_sum(src, chain, h..pkt.len as usize) else { return (Delivery::NoBuffers, 0) };
            if !complete_partial(&mut head[..h], csum, &rest) {
                return (Delivery::NoBuffers, 0);
            }
            let frame = FrameSource { net_hdr: [0; NetHdr::LEN], head: &head[..h], tail: tail(h, pkt.len as usize - h) };
            return (self.deliver_one(&frame, 0, Some((copies, out))), 1);
        };
        let seg = Segmenter::new(&gso, pkt.headers(), pkt.len as usize);
        let partial = self.ring.features.rx.csum;
        let (mut last, mut frames) = (Delivery::NoBuffers, 0);
        for k in 0..seg.count() {
            let mut head = [0u8; HEAD];
            let hl = gso.hdr_len();
            let range = seg.segment(k, &mut head[..hl], true);
            let net_hdr = if partial {
                gso.segment_offload().to_hdr()
            } else {
                let Some(sum) = payload_sum(src, chain, range.clone()) else { return (Delivery::NoBuffers, frames) };
                if !complete_partial(&mut head[..hl], gso.csum(), &sum) {
                    return (Delivery::NoBuffers, frames);
                }
                NetHdr::default()
            };
            let frame = FrameSource { net_hdr: net_hdr.to_bytes(), head: &head[..hl], tail: tail(range.start, range.len()) };
            last = self.deliver_one(&frame, 0, Some((&mut *copies, out)));
            if !matches!(last, Delivery::Done { .. }) {
                break;
            }
            frames += 1;
        }
        (last, frames)
    }

    /// One frame into the guest: copied now without `copies`, listed with;
    /// `taken`: receive chains the short way already took for it (0 or 1).
    /// The used entries wait for `publish` either way.
    #[inline]
    pub(super) fn deliver_one(&mut self, frame: &FrameSource, taken: usize, copies: Option<(&mut CopyList, u16)>) -> Delivery {
        debug_assert_eq!(self.stock.0, self.stock.1, "chains taken ahead while the long way pops");
        let r = deliver_retrying(&mut self.ring, frame, (&mut self.chains, taken), copies, self.retries);
        self.settle(r)
    }

    /// What a delivery did, counted: a bad chain refused, a broken ring
    /// stopped.
    #[inline]
    fn settle(&mut self, r: Result<Delivery, crate::virtq::RingError>) -> Delivery {
        match r {
            Ok(Delivery::NoBuffers) => Delivery::NoBuffers,
            Ok(Delivery::BadChain(e)) => {
                self.ring.refused.add(e);
                self.unpublished = true;
                Delivery::BadChain(e)
            }
            Ok(d) => {
                self.unpublished = true;
                d
            }
            Err(_) => {
                self.ring.broken = true;
                Delivery::NoBuffers
            }
        }
    }

    /// Copies mbufs from the front of `burst` into the guest's receive
    /// buffers (now: the bytes are the switch's), frees them, and leaves
    /// the rest (guest out of buffers) in `burst`; returns how many were
    /// delivered (those dropped for a bad chain are freed too, and counted
    /// in `refused`). Published with the burst's other entries.
    pub fn send(&mut self, burst: &mut Burst) -> usize {
        if self.ring.broken {
            self.send_ahead = None;
            return 0;
        }
        let (mut done, mut bad) = (0usize, 0usize);
        let mut scratch = std::mem::take(&mut self.scratch);
        for m in burst.iter() {
            self.send_step();
            let head: &[u8] = if m.nb_segs() == 1 {
                m.data()
            } else {
                scratch.clear();
                m.segments().for_each(|s| scratch.extend_from_slice(s));
                &scratch
            };
            // The egress stage made the mbuf fit this guest's offloads.
            let frame = FrameSource { net_hdr: mbuf_offload::of_mbuf(m).to_hdr().to_bytes(), head, tail: None };
            match self.deliver_one(&frame, 0, None) {
                Delivery::Done { buffers, .. } => {
                    done += 1;
                    self.send_took(buffers.into());
                }
                Delivery::BadChain(_) => {
                    done += 1;
                    bad += 1;
                    self.send_took(1);
                }
                Delivery::NoBuffers => break,
            }
        }
        self.send_ahead = None;
        self.scratch = scratch;
        burst.free_front(done);
        done - bad
    }
}

/// Frame `pkt` (in `chain` of `src`) as it came: its offloads in the
/// header, its headers from scratch, the rest from the sender's buffers.
#[inline]
fn plain<'a>(src: &'a GuestMemory, chain: &'a Chain, pkt: &'a GuestPkt) -> FrameSource<'a> {
    let h = pkt.head_len as usize;
    let tail = pkt.len as usize - h;
    // Most frames ask for no offload: their header is zeros, not built.
    let net_hdr = if pkt.off == Offload::NONE { [0; NetHdr::LEN] } else { pkt.off.to_hdr().to_bytes() };
    FrameSource { net_hdr, head: pkt.headers(), tail: (tail > 0).then_some((src, chain, (NET_HDR_LEN + h) as u64, tail as u64)) }
}

/// The chains from `*ahead` up to `until` not yet taken for writing, and
/// `ahead` moved past them.
fn next_ahead(ahead: &mut usize, until: usize) -> std::ops::Range<usize> {
    let range = *ahead..until.max(*ahead);
    *ahead = range.end;
    range
}

/// `deliver`, tried again up to `retries` times while the guest has too
/// few receive buffers (its vCPU may be refilling them: OVS's and our
/// rte_vhost ports' `vhost_retries`). While it has offered none, a retry
/// costs one index load (`RingOps::starved`).
fn deliver_retrying(
    ring: &mut GuestRing,
    frame: &FrameSource,
    (chains, mut taken): (&mut [Chain], usize),
    mut copies: Option<(&mut CopyList, u16)>,
    retries: u32,
) -> Result<Delivery, crate::virtq::RingError> {
    let mergeable = ring.features.mergeable;
    // A delivery that finds too few buffers gives back those it took.
    for _ in 0..retries {
        match deliver(&mut ring.queue, &ring.mem, frame, mergeable, (chains, std::mem::take(&mut taken)), copies.as_mut().map(|(l, o)| (&mut **l, *o)))? {
            Delivery::NoBuffers => continue,
            d => return Ok(d),
        }
    }
    deliver(&mut ring.queue, &ring.mem, frame, mergeable, (chains, taken), copies)
}

#[cfg(test)]
mod tests {
    use super::{buffers_for, next_ahead, WRITE_AHEAD};

    #[test]
    fn each_receive_chain_is_taken_for_writing_once_before_its_frame_is_written_and_at_most_write_ahead_early() {
        // 32 frames of one chain each (64 B, 1518 B), of three (9000 B
        // into 4 KB buffers), as `deliver_all` walks them.
        for per_frame in [1, 3] {
            let stock = 32 * per_frame;
            let (mut ahead, mut taken) = (0, Vec::new());
            taken.extend(next_ahead(&mut ahead, stock.min(WRITE_AHEAD)));
            for at in (0..stock).step_by(per_frame) {
                taken.extend(next_ahead(&mut ahead, stock.min(at + WRITE_AHEAD)));
                assert!((at..at + per_frame).all(|c| taken.contains(&c)), "frame at chain {at}: its chains taken before it is written");
                assert!(taken.iter().all(|&c| c < at + WRITE_AHEAD), "frame at chain {at}: nothing taken more than {WRITE_AHEAD} chains ahead");
            }
            assert_eq!(taken, (0..stock).collect::<Vec<_>>(), "each chain once, in order");
        }
        // Chains `prefetch_buffers` took already are not taken again.
        let mut ahead = 20;
        assert_eq!((next_ahead(&mut ahead, 8), next_ahead(&mut ahead, 24)), (20..20, 20..24));
    }

    #[test]
    fn a_burst_takes_ahead_the_receive_buffers_its_frames_fill() {
        // Into 2 KB buffers, 64 B and 1518 B frames: one each.
        assert_eq!(buffers_for(32, 32 * 64, 2048), 32);
        assert_eq!(buffers_for(32, 32 * 1514, 2048), 32);
        // 9000 B frames into 4 KB buffers: three each, not the 71 their
        // bytes would fill end to end.
        assert_eq!(buffers_for(32, 32 * 9000, 4096), 96);
        // 64 KB segments: four a frame of a burst at most.
        assert_eq!(buffers_for(32, 32 * 65536, 2048), 128);
        // Nothing stocked yet, or a room of nothing: no more than that.
        assert_eq!(buffers_for(32, 32 * 9000, u64::MAX), 32);
        assert_eq!(buffers_for(32, 32 * 9000, 0), 128);
        assert_eq!(buffers_for(0, 0, 4096), 0);
    }

    /// Bytes counted for no frame divided by the frame count, 0, on a PMD
    /// thread; no caller does that yet.
    #[test]
    fn regression_bytes_of_no_frame_are_no_division_by_zero() {
        assert_eq!(buffers_for(0, 9000, 4096), 3);
    }
}
