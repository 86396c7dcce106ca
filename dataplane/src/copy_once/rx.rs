//! A guest's transmit ring, which the switch receives from.
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use pmd_bridge::eventfd::{EventFd, Waiter};
use pmd_bridge::extbuf::Lender;
use pmd_bridge::{Mbuf, Mempool, Stock};

use super::line_clock::LineClock;
use super::{CopyOnceTx, GuestPkt, GuestRing, ZeroCopy, HEAD, HEAD_PLAIN};
use crate::burst_phases::{self, Phase};
use crate::copy_list::{CopiesDone, CopyList, Sender};
use crate::counters::{count_bad_headers, DropReason, ZeroCopy as Outcome};
use crate::mbuf_offload;
use crate::offload::{validate, Caps, HdrError, NetHdr, Offload};
use crate::packet::PacketBuf;
use crate::virtio_net::{Delivery, NET_HDR_LEN};
use crate::virtq::{Chain, ChainError, Direction, RingOps, UsedAhead, MAX_READ};

/// Chains pass 1 takes before it requests their buffers: taken a burst at
/// once, the first buffers would wait for the last chain's walk to be
/// requested.
const PASS1_GROUP: usize = 8;

/// While lines from the guest's core are slow (`LineClock`): how many
/// frames ahead of its header read pass 2 takes a frame's first lines into
/// the first-level cache, pass 1 having asked for them into the second.
const HEADS_NEAR: usize = 8;

pub struct CopyOnceRx {
    ring: GuestRing,
    /// The chains of the burst in flight, by frame.
    chains: Vec<Chain>,
    /// Chains taken by `recv` and not yet returned (`GuestBurst::commit`).
    taken: usize,
    /// For a guest that negotiated IN_ORDER: the heads of the chains `recv`
    /// took, good and refused, in ring order. A refused chain then goes
    /// back with the good ones, in its place, not ahead of those before it.
    order: Vec<u16>,
    /// Frames bound for NICs lent from guest memory (None: always copied).
    zc: Option<ZeroCopy>,
    /// Frames refused for their virtio-net header, by `HdrError` index,
    /// since the PMD thread last counted them.
    bad_headers: [u32; HdrError::ALL.len()],
    /// The guest's kick eventfd for this ring, when it gave one.
    kick: Option<Arc<EventFd>>,
    /// How far away the guest's core is, from timings of the avail reads.
    clock: LineClock,
}

/// Frames taken from a guest's transmit ring: their headers in scratch,
/// their chains lent to the switch until `commit`.
#[must_use = "a burst's chains go back to the guest only through commit"]
pub struct GuestBurst<'a> {
    rx: &'a mut CopyOnceRx,
    pkts: &'a [GuestPkt],
}

impl CopyOnceRx {
    pub fn new(ring: GuestRing) -> CopyOnceRx {
        CopyOnceRx {
            ring,
            chains: (0..pmd_bridge::BURST).map(|_| Chain::default()).collect(),
            taken: 0,
            order: Vec::with_capacity(pmd_bridge::BURST + 1),
            zc: None,
            bad_headers: [0; HdrError::ALL.len()],
            kick: None,
            clock: LineClock::default(),
        }
    }

    /// Lends frames bound for NICs (see `zero_copy`).
    pub fn with_zero_copy(mut self, zc: ZeroCopy) -> CopyOnceRx {
        self.zc = Some(zc);
        self
    }

    /// The ring and, if it lends, its lender (with the chains still out),
    /// back to the control thread.
    pub fn into_parts(self) -> (GuestRing, Option<Lender>) {
        (self.ring, self.zc.map(ZeroCopy::into_lender))
    }

    /// Delivers an interrupt the guest is owed; whether one still is.
    pub fn retry_call(&mut self) -> bool {
        self.ring.retry_call()
    }

    /// Lets the guest wake a sleeping thread with `kick` (our duplicate of
    /// its kick eventfd for this ring).
    pub fn with_kick(mut self, kick: Arc<EventFd>) -> CopyOnceRx {
        self.kick = Some(kick);
        self
    }

    /// Before the thread sleeps until kicked: whether this ring lets it
    /// (nothing waits in it, kicks asked for and its eventfd added to
    /// `waiter`; a broken ring, which gives nothing until the next plan,
    /// needs neither). It cannot without a kick eventfd, nor with chains
    /// out in NICs (they come back with no kick). False: `wake`.
    pub fn sleep_on_kick(&mut self, waiter: &mut Waiter) -> bool {
        if self.ring.broken {
            return true;
        }
        let Some(kick) = &self.kick else { return false };
        if self.zc.as_ref().is_some_and(|z| z.in_flight() > 0) {
            return false;
        }
        // A kick that came while we polled would end this sleep at once; one
        // that comes from here on is for an entry the check below sees, or
        // one after it.
        kick.clear();
        if !matches!(self.ring.queue.ask_for_kicks(&self.ring.mem), Ok(true)) {
            return false;
        }
        waiter.add(kick);
        true
    }

    /// After a sleep, or one not taken: the guest kicks no more, we poll.
    pub fn wake(&mut self) {
        let _ = self.ring.queue.suppress_kicks(&self.ring.mem);
    }

    /// Returns the chains NICs are done with to the guest.
    fn reap(&mut self) {
        let (Some(zc), ring) = (self.zc.as_mut(), &mut self.ring) else { return };
        if zc.reap(|head| {
            let _ = ring.queue.add_used(&ring.mem, head, 0);
        }) > 0 {
            ring.publish_returned();
        }
    }

    /// Takes up to `out.len()` frames the guest transmitted: headers into
    /// `out`, payloads left in place. Bad chains go back at once, counted
    /// in `drops`. `ahead(n, frame_bytes)` runs once the burst's chains are
    /// taken, before their headers are read: what it starts loading (the
    /// outputs' receive descriptors, `egress::prefetch_rings`) comes in
    /// meanwhile.
    pub fn recv<'a>(&'a mut self, out: &'a mut [GuestPkt], drops: &[AtomicU64; DropReason::COUNT], ahead: impl FnOnce(usize, u64)) -> Option<GuestBurst<'a>> {
        debug_assert_eq!(self.taken, 0, "a burst not committed");
        self.reap();
        let n = self.take(out, ahead);
        self.ring.count_refused(drops);
        count_bad_headers(&mut self.bad_headers, drops);
        (n > 0).then(|| GuestBurst { rx: self, pkts: &out[..n] })
    }

    fn take(&mut self, out: &mut [GuestPkt], ahead: impl FnOnce(usize, u64)) -> usize {
        let ring = &mut self.ring;
        if ring.broken {
            return 0;
        }
        // Timed when it found chains: the guest wrote the line since the
        // last read (or its idx read was skipped, a timing too short, which
        // the clock's median outvotes).
        let timed = self.clock.due().then(pmd_bridge::cycles::tsc_after_loads);
        let want = match ring.queue.to_take(&ring.mem, out.len()) {
            Ok(n) => {
                if let Some(t0) = timed.filter(|_| n > 0) {
                    self.clock.add(pmd_bridge::cycles::tsc_after_loads() - t0);
                }
                n
            }
            Err(_) => {
                ring.broken = true;
                return 0;
            }
        };
        // Pass 1: take every chain and start loading its first buffer, so
        // the header reads of pass 2 overlap instead of stalling one by one;
        // the burst's descriptors are requested together first, so the
        // walks do not wait on them one by one either. Chains are taken
        // `PASS1_GROUP` at a time, each group's buffers requested at once.
        let in_order = ring.queue.features().in_order;
        // While lines are slow, the frames' first lines go into the second
        // level (a request the first level's few miss buffers need not
        // hold for 300 cycles and more), and pass 2 takes them into the
        // first `HEADS_NEAR` frames ahead. `poll_ab` 2vm split, against
        // the fast state's way in the slow state: 0.90, 0.90 at 64 B, 0.96,
        // 0.96 at 1518 B; taken in every state, fast 1.015-1.041. (The next
        // burst's receive buffers, also taken a poll early while slow, went
        // once `CopyOnceTx::deliver_all` took each burst's a few frames
        // ahead of their writes: then they cost 1.07-1.08.) Split rings
        // only: on packed ones these heads cost more than they saved
        // (`poll_ab` 2vm packed, slow state: 1.021-1.025 at 64 B, 1.026 at
        // 1518 B; 1.087-1.101 at 64 B since).
        let slow = self.clock.slow() && !ring.queue.is_packed();
        ring.queue.prefetch_next(&ring.mem, want, if in_order { UsedAhead::One } else { UsedAhead::Each });
        burst_phases::mark(Phase::Ring);
        let refused = ring.refused;
        let order = &mut self.order;
        order.clear();
        // Returns a refused chain: at once, or in its place with the burst.
        let refuse = |ring: &mut GuestRing, head: u16| {
            if !in_order {
                let _ = ring.queue.add_used(&ring.mem, head, 0);
            }
        };
        let (mut got, mut k) = (0usize, 0usize);
        while got < want {
            let end = (got + PASS1_GROUP).min(want);
            let mut held = None;
            let n = ring.queue.pop_many(&ring.mem, Direction::DeviceReads, &mut self.chains[got..end], &mut ring.refused, in_order.then_some(&mut held)).unwrap_or_else(|_| {
                ring.broken = true;
                0
            });
            for i in got..got + n {
                let c = &self.chains[i];
                if in_order {
                    order.push(c.head);
                }
                if c.len() > NET_HDR_LEN as u64 && c.len() <= MAX_READ {
                    if slow {
                        let first = &c.segments()[0];
                        ring.mem.prefetch_span_l2(first, 0, (first.len() as usize).min(65));
                    } else {
                        take_head(&ring.mem, c);
                    }
                    if i != k {
                        self.chains.swap(i, k);
                    }
                    k += 1;
                    continue;
                }
                refuse(ring, c.head);
                ring.refused.add(ChainError::BadLength);
            }
            got += n;
            // A bad chain held ends the burst, unless none came before it.
            if let Some(head) = held {
                if order.is_empty() {
                    let _ = ring.queue.add_used(&ring.mem, head, 0);
                    continue;
                }
                order.push(head);
                break;
            }
            if got < end {
                break;
            }
        }
        burst_phases::mark(Phase::Pop);
        if k > 0 {
            ahead(k, self.chains[..k].iter().map(|c| c.len() - NET_HDR_LEN as u64).sum());
        }
        burst_phases::mark(Phase::Ahead);
        // Chains returned already (refused, counted): published even if
        // none is left to deliver.
        let mut bad = ring.refused != refused;
        // Pass 2: the virtio-net header and the frame's headers into
        // scratch (one read; the guest may rewrite its buffer meanwhile, so
        // every later decision is made on this copy).
        let mut n = 0;
        if slow {
            self.chains[..k.min(HEADS_NEAR)].iter().for_each(|c| take_head(&ring.mem, c));
        }
        for i in 0..k {
            if let Some(c) = self.chains.get(i + HEADS_NEAR).filter(|_| slow && i + HEADS_NEAR < k) {
                take_head(&ring.mem, c);
            }
            let c = &self.chains[i];
            let len = c.len() - NET_HDR_LEN as u64;
            match read_frame_head(&ring.mem, c, len, ring.features.tx, &mut out[n]) {
                Ok(()) => {
                    if i != n {
                        self.chains.swap(i, n);
                    }
                    n += 1;
                    continue;
                }
                // Unreachable for a chain that passed the length check;
                // handled anyway: back empty, the rest moved up.
                Err(None) => ring.refused.add(ChainError::BadLength),
                Err(Some(e)) => self.bad_headers[e as usize] += 1,
            }
            refuse(ring, self.chains[i].head);
            bad = true;
        }
        self.taken = n;
        if bad && n == 0 {
            // Only chains never read from: nothing to wait for.
            let _ = ring.queue.add_used_in_order(&ring.mem, &self.order);
            ring.publish_returned();
        }
        n
    }

    /// Returns the burst's chains to the guest: every copy out of them has
    /// run (`done`). Those lent to NICs come back when the NICs free them.
    fn complete(&mut self, done: &CopiesDone) {
        let ring = &mut self.ring;
        let n = std::mem::take(&mut self.taken);
        let _ = if ring.queue.features().in_order {
            // Nothing is lent from such a ring (see `zero_copy`).
            ring.queue.add_used_in_order(&ring.mem, &self.order)
        } else {
            let zc = self.zc.as_ref();
            ring.queue.add_used_all(&ring.mem, self.chains[..n].iter().enumerate().filter(|&(i, _)| !zc.is_some_and(|z| z.is_lent(i))).map(|(_, c)| (c.head, 0)))
        };
        if let Some(z) = self.zc.as_mut() {
            z.end_burst();
        }
        if n > 0 {
            ring.publish(done);
        }
    }
}

impl<'a> GuestBurst<'a> {
    pub fn pkts(&self) -> &'a [GuestPkt] {
        self.pkts
    }

    /// The sender, whose memory the burst's listed copies read.
    pub fn sender(&self) -> Sender<'_> {
        Sender { mem: &self.rx.ring.mem, lines_slow: self.rx.clock.slow() }
    }

    /// Frame `i` into copy-once guest `dst` (output port `out`), its payload
    /// copy listed in `copies` (`CopyOnceTx::deliver_from`).
    #[inline]
    pub fn deliver(&self, i: usize, dst: &mut CopyOnceTx, copies: &mut CopyList, out: u16) -> (Delivery, u32) {
        dst.deliver_from(&self.rx.ring.mem, &self.rx.chains[i], &self.pkts[i], copies, out)
    }

    /// Frames `frames` (in order) into copy-once guest `dst` (output port
    /// `out`), in one loop; `each(i, delivery, frames made)`.
    /// `count`: how many frames `frames` gives.
    pub fn deliver_all(&self, frames: impl Iterator<Item = usize>, count: usize, dst: &mut CopyOnceTx, copies: &mut CopyList, out: u16, each: impl FnMut(usize, Delivery, u32)) {
        let (chains, pkts) = (&self.rx.chains, self.pkts);
        dst.deliver_all(&self.rx.ring.mem, frames.map(|i| (i, &chains[i], &pkts[i])), count, copies, out, each);
    }

    /// A copy of frame `i` in an mbuf (the one payload copy of a frame that
    /// leaves for a port that is not a copy-once guest), its offload
    /// requests in the mbuf's.
    pub fn materialize(&mut self, i: usize, stock: &mut Stock, pool: &Mempool) -> Option<Mbuf> {
        let (rx, pkt) = (&mut *self.rx, &self.pkts[i]);
        let len = pkt.len as usize;
        // Straight from guest memory into the mbufs: the headers from the
        // switch's copy, then the rest, over a chain when one mbuf is too
        // small (a jumbo frame, a TSO segment).
        let room = usize::from(pool.data_room()).max(1);
        let (mut chain, mut off): (Option<Mbuf>, usize) = (None, 0);
        while off < len {
            let copied = if off == 0 { pkt.headers() } else { &[] };
            let mut seg = stock.take(pool)?;
            let buf = seg.fill_to(copied, (len - off).min(room))?;
            let n = buf.len();
            rx.chains[i].read_at(&rx.ring.mem, (NET_HDR_LEN + off + copied.len()) as u64, &mut buf[copied.len()..]).ok()?;
            match chain.as_mut() {
                Some(m) => m.chain(seg).ok()?,
                None => chain = Some(seg),
            }
            off += n;
        }
        let mut m = chain?;
        if pkt.off != Offload::NONE {
            m.set_tx_offload(mbuf_offload::to_mbuf(&pkt.off, pkt.headers())).then_some(())?;
        }
        Some(m)
    }

    /// Frame `i` for NIC output `out` (which takes offloads `caps`) with no
    /// payload copy: the header copy, then the guest's buffers (`flood`:
    /// more outputs of it may follow). None: this ring never lends; Err:
    /// copy it (`materialize`), and why.
    #[inline]
    pub fn lend(&mut self, i: usize, out: u16, caps: Caps, flood: bool, fresh: (&Mempool, &mut Stock), emit: impl FnMut(Mbuf)) -> Option<Result<usize, Outcome>> {
        let rx = &mut *self.rx;
        // A lent chain comes back when a NIC frees it, out of order.
        let zc = rx.zc.as_mut().filter(|_| !rx.ring.queue.features().in_order)?;
        Some(zc.lend(i, out, caps, flood, fresh, &rx.ring.mem, &rx.chains[i], &self.pkts[i], emit))
    }

    /// Ends the burst: the chains go back to the guest, after every copy
    /// out of them (`done`).
    pub fn commit(self, done: &CopiesDone) {
        self.rx.complete(done);
    }
}

/// Starts loading the first two lines of `c`'s first buffer: its
/// virtio-net header and the frame's headers.
#[inline]
fn take_head(mem: &pmd_bridge::guest_mem::GuestMemory, c: &Chain) {
    let first = &c.segments()[0];
    mem.prefetch(first, 0);
    mem.prefetch(first, 64);
}

/// Reads frame `len` bytes long in `c` (after its virtio-net header) into
/// `pkt`: the header validated against what the guest may send (`tx`), and
/// the frame's first bytes, as many as its offloads need. Err(None): the
/// chain could not be read; Err(Some): the header is refused.
pub(super) fn read_frame_head(mem: &pmd_bridge::guest_mem::GuestMemory, c: &Chain, len: u64, tx: Caps, pkt: &mut GuestPkt) -> Result<(), Option<HdrError>> {
    let h = (len as usize).min(HEAD_PLAIN);
    // Most frames' headers lie in their first buffer: one copy, no walk.
    let lead = &mut pkt.raw[..NET_HDR_LEN + h];
    match c.segments().first().filter(|s| s.len() as usize >= lead.len()) {
        Some(s) => mem.read_span(s, 0, lead),
        None => c.read_at(mem, 0, lead),
    }
    .map_err(|_| None)?;
    pkt.len = len as u32;
    pkt.head_len = h as u8;
    pkt.off = Offload::NONE;
    // Only the two bytes that say whether there is more are read back
    // before the copy above has landed: a wider load across its stores
    // cannot be forwarded from them and waits for every older store (the
    // last burst's, into another guest's lines) to drain.
    if pkt.raw[0] & crate::offload::NEEDS_CSUM == 0 && pkt.raw[1] == crate::offload::GSO_NONE {
        return Ok(());
    }
    let hdr = NetHdr::from_bytes(pkt.raw[..NetHdr::LEN].try_into().expect("10 bytes"));
    let h = (len as usize).min(HEAD);
    if h > HEAD_PLAIN {
        c.read_at(mem, (NET_HDR_LEN + HEAD_PLAIN) as u64, &mut pkt.raw[NET_HDR_LEN + HEAD_PLAIN..NET_HDR_LEN + h]).map_err(|_| None)?;
        pkt.head_len = h as u8;
    }
    pkt.off = validate(&hdr, pkt.headers(), len as usize, tx).map_err(Some)?;
    Ok(())
}
