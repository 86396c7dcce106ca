//! A copy-once vhost port's queue: the switch walks the guest's ring itself.
//!
//! What a guest sends is received as `GuestPkt`s: the first bytes of each
//! frame copied into switch-private scratch (the guest may rewrite its
//! buffer at any time; the switch classifies on this copy and delivers this
//! copy), the payload left in the guest's buffer. Pass 2 then copies the
//! payload once: straight into another copy-once guest's receive buffers
//! (`deliver_from`), or into an mbuf for any other port (`materialize`).
//! The source chains go back to the guest after the burst (`complete_rx`).
//! mbufs from other ports are copied once into the guest (`send`). Bad
//! chains go back empty and are counted; a ring whose state is impossible
//! stops being polled. Exactly one thread owns each `OwnRing`: the plan
//! gives a guest receive ring to one PMD thread only (per-thread queues).
use std::sync::Arc;

use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::{Burst, CallFd, Mbuf, Mempool, VhostDevice};

use crate::copy_list::CopyList;
use crate::mbuf_offload;
use crate::offload::{complete_partial, validate, Caps, Checksum, HdrError, NetHdr, Offload, Segmenter};
use crate::packet::PacketBuf;
use crate::virtio_net::{deliver, Delivery, FrameSource, NET_HDR_LEN};
use crate::virtq::{Chain, ChainError, Direction, Pop, Refused, RingError, SplitQueue};

/// Bytes of each frame copied to scratch: every header the switch reads
/// (Ethernet, a tag and IP) in the common case...
const HEAD_PLAIN: usize = 64;
/// ...and every header a checksum or segmentation offload touches
/// (Ethernet, a tag, IPv4 or IPv6 and TCP, options included).
pub const HEAD: usize = 160;

/// A frame still in a guest's transmit buffer: its headers in scratch, and
/// its offload requests as the switch validated them.
#[derive(Clone, Copy)]
pub struct GuestPkt {
    head: [u8; HEAD],
    head_len: u8,
    len: u32,
    off: Offload,
}

impl Default for GuestPkt {
    fn default() -> Self {
        GuestPkt { head: [0; HEAD], head_len: 0, len: 0, off: Offload::NONE }
    }
}

impl GuestPkt {
    pub fn offload(&self) -> &Offload {
        &self.off
    }
}

impl PacketBuf for GuestPkt {
    fn frame_len(&self) -> usize {
        self.len as usize
    }

    fn headers(&self) -> &[u8] {
        &self.head[..self.head_len as usize]
    }

    fn segment_ip_len(&self) -> Option<usize> {
        self.off.gso.map(|g| g.l3_len as usize + g.l4_len as usize + g.mss as usize)
    }
}

/// What the guest negotiated, as the datapath needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestFeatures {
    pub mergeable: bool,
    /// The offloads it may ask for in what it sends.
    pub tx: Caps,
    /// The offloads it takes in what it receives.
    pub rx: Caps,
}

impl GuestFeatures {
    /// What a guest that negotiated `features` gets; refused without
    /// VERSION_1: a legacy guest's virtio-net header is 10 bytes (12 only
    /// with MRG_RXBUF), and every offset here assumes 12.
    pub fn from_bits(features: u64) -> Result<GuestFeatures, &'static str> {
        const MRG_RXBUF: u64 = 1 << 15;
        const VERSION_1: u64 = 1 << 32;
        if features & VERSION_1 == 0 {
            return Err("the guest did not negotiate VERSION_1 (a copy-once port needs it)");
        }
        Ok(GuestFeatures { mergeable: features & MRG_RXBUF != 0, tx: Caps::guest_tx(features), rx: Caps::guest_rx(features) })
    }
}

pub struct OwnRing {
    pub mem: Arc<GuestMemory>,
    pub dev: Arc<VhostDevice>,
    /// The guest's interrupt for this ring, signalled directly: rte_vhost's
    /// call would decide with EVENT_IDX from indices it does not keep here.
    call_fd: Option<Arc<CallFd>>,
    pub queue: SplitQueue,
    /// The virtio queue index (even: guest receive, odd: guest transmit).
    pub vring: u16,
    pub features: GuestFeatures,
    /// Deliveries tried again while the guest's receive ring is full
    /// (`[switch] vhost_retries`).
    pub retries: u32,
    pub broken: bool,
    /// Chains returned empty since the PMD thread last counted them.
    pub refused: Refused,
    /// Frames refused for their virtio-net header, by reason, likewise.
    pub bad_headers: [u32; HdrError::ALL.len()],
    scratch: Vec<u8>,
    chains: Vec<Chain>,
    /// Transmit chains taken by `recv_guest` and not yet returned.
    in_flight: usize,
    /// Receive chains of the frame being delivered (scratch).
    rx_chains: Vec<Chain>,
    /// Used entries written by `deliver_from` and not yet published.
    unpublished: bool,
    /// An interrupt the guest is owed: the call found the queue lock taken
    /// by a vhost-user message handler (`retry_call`).
    call_pending: bool,
}

impl OwnRing {
    pub fn new(mem: Arc<GuestMemory>, dev: Arc<VhostDevice>, call_fd: Option<Arc<CallFd>>, queue: SplitQueue, vring: u16, features: GuestFeatures) -> OwnRing {
        OwnRing {
            mem,
            dev,
            call_fd,
            queue,
            vring,
            features,
            retries: 0,
            broken: false,
            refused: Refused::default(),
            bad_headers: [0; HdrError::ALL.len()],
            scratch: Vec::with_capacity(crate::virtq::MAX_READ as usize),
            chains: (0..pmd_bridge::BURST).map(|_| Chain::default()).collect(),
            in_flight: 0,
            rx_chains: vec![Chain::default(); crate::virtio_net::MAX_BUFFERS],
            unpublished: false,
            // A ring comes (back) into a plan after the guest may have been
            // owed an interrupt (the previous holder's call failed, or the
            // ring was handed over mid-change): one spurious interrupt is
            // harmless, a lost one can stall a guest's queue for good.
            call_pending: true,
        }
    }

    /// Never waits on the queue lock a message handler may hold; if it is
    /// held, the interrupt is owed (`retry_call`).
    fn call(&mut self) {
        self.call_pending = !match &self.call_fd {
            Some(fd) => fd.signal(),
            None => self.dev.call_nonblock(self.vring),
        };
    }

    /// Makes the used entries written so far visible; a used ring we
    /// cannot write any more stops the queue.
    fn publish(&mut self) {
        if self.queue.publish(&self.mem).is_err() {
            self.broken = true;
        }
    }

    fn notify(&mut self) {
        if self.queue.needs_interrupt(&self.mem) {
            self.call();
        }
    }

    /// Delivers an interrupt a failed call still owes the guest (the PMD
    /// loop calls this now and then, not per burst).
    pub fn retry_call(&mut self) {
        if self.call_pending && !self.broken {
            self.call();
        }
    }

    /// Takes up to `out.len()` frames the guest transmitted, headers into
    /// scratch, payloads left in place; returns how many. The chains stay
    /// in flight until `complete_rx`; bad ones go back at once (`refused`).
    pub fn recv_guest(&mut self, out: &mut [GuestPkt]) -> usize {
        if self.broken {
            return 0;
        }
        let avail = match self.queue.available(&self.mem) {
            Ok(n) => n as usize,
            Err(_) => {
                self.broken = true;
                return 0;
            }
        };
        // Pass 1: walk every chain and start loading its first buffer, so
        // the header reads of pass 2 overlap instead of stalling one by one.
        let (mut k, mut bad) = (0usize, 0u64);
        for _ in 0..avail.min(out.len()) {
            let err = match self.queue.pop(&self.mem, Direction::DeviceReads, &mut self.chains[k]) {
                Ok(Pop::Chain) => {
                    let c = &self.chains[k];
                    if c.len() > NET_HDR_LEN as u64 && c.len() <= crate::virtq::MAX_READ {
                        let first = &c.segments()[0];
                        self.mem.prefetch(first, 0);
                        self.mem.prefetch(first, 64);
                        k += 1;
                        continue;
                    }
                    (c.head, ChainError::BadLength)
                }
                Ok(Pop::Bad { head, err }) => (head, err),
                Ok(Pop::Empty) => break,
                Err(_) => {
                    self.broken = true;
                    break;
                }
            };
            let _ = self.queue.add_used(&self.mem, err.0, 0);
            self.refused.add(err.1);
            bad += 1;
        }
        // Pass 2: the virtio-net header and the frame's headers into
        // scratch (one read; the guest may rewrite its buffer meanwhile, so
        // every later decision is made on this copy).
        let mut n = 0;
        for i in 0..k {
            let c = &self.chains[i];
            let len = c.len() - NET_HDR_LEN as u64;
            match read_frame_head(&self.mem, c, len, self.features.tx, &mut out[n]) {
                Ok(()) => {
                    if i != n {
                        self.chains.swap(i, n);
                    }
                    n += 1;
                    continue;
                }
                // Unreachable for a chain that passed the length check;
                // handled anyway: back empty, the rest moved up.
                Err(None) => self.refused.add(ChainError::BadLength),
                Err(Some(e)) => self.bad_headers[e as usize] += 1,
            }
            let _ = self.queue.add_used(&self.mem, self.chains[i].head, 0);
            bad += 1;
        }
        self.in_flight = n;
        if bad > 0 && n == 0 {
            self.publish();
            self.notify();
        }
        n
    }

    /// A copy of in-flight frame `i` in an mbuf chain (the one payload copy
    /// of a frame that leaves for a port that is not a copy-once guest),
    /// its offload requests in the mbuf's.
    pub fn materialize(&mut self, i: usize, pkt: &GuestPkt, pool: &Mempool) -> Option<Mbuf> {
        self.scratch.clear();
        self.scratch.extend_from_slice(pkt.headers());
        let rest = pkt.len as u64 - pkt.head_len as u64;
        if rest > 0 {
            let start = self.scratch.len();
            self.scratch.resize(start + rest as usize, 0);
            self.chains[i].read_at(&self.mem, (NET_HDR_LEN + pkt.head_len as usize) as u64, &mut self.scratch[start..]).ok()?;
        }
        let mut m = pool.alloc_from(&self.scratch)?;
        if pkt.off != Offload::NONE {
            m.set_tx_offload(mbuf_offload::to_mbuf(&pkt.off, pkt.headers())).then_some(())?;
        }
        Some(m)
    }

    /// Delivers in-flight frame `i` of `src` into this guest (output port
    /// `out`): the headers from scratch, the payload listed in `copies` for
    /// its one copy, guest to guest, after the burst.
    ///
    /// The frame's offloads go along when this guest takes them; otherwise
    /// the switch does their work here: a TCP segment is cut into frames of
    /// one MSS, each still one copy guest to guest, and a partial checksum
    /// is finished from the sender's bytes. Returns the delivery and the
    /// frames it made (more than one for a segment cut here).
    pub fn deliver_from(&mut self, src: &OwnRing, i: usize, pkt: &GuestPkt, copies: &mut CopyList, out: u16) -> (Delivery, u32) {
        if self.broken {
            return (Delivery::NoBuffers, 0);
        }
        let chain = &src.chains[i];
        if pkt.off.fits(self.features.rx) {
            let off = (NET_HDR_LEN + pkt.head_len as usize) as u64;
            let rest = pkt.len as u64 - pkt.head_len as u64;
            let tail = (rest > 0).then_some((&*src.mem, chain, off, rest));
            let frame = FrameSource { net_hdr: pkt.off.to_hdr(), head: pkt.headers(), tail };
            return (self.deliver_one(&frame, Some((copies, out))), 1);
        }
        let payload_sum = |scratch: &mut Vec<u8>, range: std::ops::Range<usize>| -> Option<Checksum> {
            scratch.clear();
            scratch.resize(range.len(), 0);
            chain.read_at(&src.mem, (NET_HDR_LEN + range.start) as u64, scratch).ok()?;
            let mut sum = Checksum::new();
            sum.add(scratch);
            Some(sum)
        };
        let Some(gso) = pkt.off.gso else {
            // A partial checksum this guest cannot finish: finish it here,
            // over the header copy and the sender's bytes past it.
            let mut head = pkt.head;
            let h = pkt.head_len as usize;
            let Some(csum) = pkt.off.csum else { return (Delivery::NoBuffers, 0) };
            let Some(rest) = payload_sum(&mut self.scratch, h..pkt.len as usize) else { return (Delivery::NoBuffers, 0) };
            if !complete_partial(&mut head[..h], csum, &rest) {
                return (Delivery::NoBuffers, 0);
            }
            let tail = (pkt.len as usize > h).then_some((&*src.mem, chain, (NET_HDR_LEN + h) as u64, pkt.len as u64 - h as u64));
            return (self.deliver_one(&FrameSource { net_hdr: NetHdr::default(), head: &head[..h], tail }, Some((copies, out))), 1);
        };
        let seg = Segmenter::new(&gso, pkt.headers(), pkt.len as usize);
        let partial = self.features.rx.csum;
        let (mut last, mut frames) = (Delivery::NoBuffers, 0);
        for k in 0..seg.count() {
            let mut head = [0u8; HEAD];
            let hl = gso.hdr_len();
            let range = seg.segment(k, &mut head[..hl], true);
            let net_hdr = if partial {
                gso.segment_offload().to_hdr()
            } else {
                let Some(sum) = payload_sum(&mut self.scratch, range.clone()) else { return (Delivery::NoBuffers, frames) };
                if !complete_partial(&mut head[..hl], gso.csum(), &sum) {
                    return (Delivery::NoBuffers, frames);
                }
                NetHdr::default()
            };
            let tail = Some((&*src.mem, chain, (NET_HDR_LEN + range.start) as u64, range.len() as u64));
            last = self.deliver_one(&FrameSource { net_hdr, head: &head[..hl], tail }, Some((&mut *copies, out)));
            if !matches!(last, Delivery::Done { .. }) {
                break;
            }
            frames += 1;
        }
        (last, frames)
    }

    fn deliver_one(&mut self, frame: &FrameSource, copies: Option<(&mut CopyList, u16)>) -> Delivery {
        match deliver_retrying(&mut self.queue, &self.mem, frame, self.features.mergeable, &mut self.rx_chains, copies, self.retries) {
            Ok(d) => {
                if let Delivery::BadChain(e) = d {
                    self.refused.add(e);
                }
                self.unpublished = true;
                d
            }
            Err(_) => {
                self.broken = true;
                Delivery::NoBuffers
            }
        }
    }

    /// Starts loading the receive descriptors the next `n` deliveries will
    /// take (their heads are already known available).
    pub fn prefetch_rx(&self, n: usize) {
        if !self.broken {
            self.queue.prefetch_next(&self.mem, n);
        }
    }

    /// Publishes what `deliver_from` wrote this burst, and notifies once.
    pub fn flush(&mut self) {
        if std::mem::take(&mut self.unpublished) {
            self.publish();
            self.notify();
        }
    }

    /// Returns the burst's transmit chains to the guest (after every copy
    /// out of them is done), publishes, and notifies once.
    pub fn complete_rx(&mut self) {
        for c in &self.chains[..self.in_flight] {
            let _ = self.queue.add_used(&self.mem, c.head, 0);
        }
        if self.in_flight > 0 {
            self.in_flight = 0;
            self.publish();
            self.notify();
        }
    }

    /// Copies mbufs from the front of `burst` into the guest's receive
    /// buffers, frees them, and leaves the rest (guest out of buffers) in
    /// `burst`; returns how many were delivered (those dropped for a bad
    /// chain are freed too, and counted in `refused`).
    pub fn send(&mut self, burst: &mut Burst) -> usize {
        if self.broken {
            return 0;
        }
        let (mut done, mut bad) = (0usize, 0usize);
        for m in burst.iter() {
            let head: &[u8] = if m.nb_segs() == 1 {
                m.data()
            } else {
                self.scratch.clear();
                m.segments().for_each(|s| self.scratch.extend_from_slice(s));
                &self.scratch
            };
            // The egress stage made the mbuf fit this guest's offloads.
            let net_hdr = mbuf_offload::of_mbuf(m).to_hdr();
            let frame = FrameSource { net_hdr, head, tail: None };
            match deliver_retrying(&mut self.queue, &self.mem, &frame, self.features.mergeable, &mut self.rx_chains, None, self.retries) {
                Ok(Delivery::Done { .. }) => done += 1,
                Ok(Delivery::BadChain(e)) => {
                    self.refused.add(e);
                    done += 1;
                    bad += 1;
                }
                Ok(Delivery::NoBuffers) => break,
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
        if done > 0 {
            self.publish();
            self.notify();
        }
        burst.free_front(done);
        done - bad
    }
}

/// `deliver`, tried again up to `retries` times while the guest has too
/// few receive buffers (its vCPU may be refilling them: OVS's and our
/// rte_vhost ports' `vhost_retries`). While it has offered none, a retry
/// costs one index load (`SplitQueue::starved`).
fn deliver_retrying(
    q: &mut SplitQueue,
    mem: &GuestMemory,
    frame: &FrameSource,
    mergeable: bool,
    chains: &mut [Chain],
    mut copies: Option<(&mut CopyList, u16)>,
    retries: u32,
) -> Result<Delivery, RingError> {
    for _ in 0..retries {
        match deliver(q, mem, frame, mergeable, chains, copies.as_mut().map(|(l, o)| (&mut **l, *o)))? {
            Delivery::NoBuffers => continue,
            d => return Ok(d),
        }
    }
    deliver(q, mem, frame, mergeable, chains, copies)
}

/// Reads frame `len` bytes long in `c` (after its virtio-net header) into
/// `pkt`: the header validated against what the guest may send (`tx`), and
/// the frame's first bytes, as many as its offloads need. Err(None): the
/// chain could not be read; Err(Some): the header is refused.
fn read_frame_head(mem: &GuestMemory, c: &Chain, len: u64, tx: Caps, pkt: &mut GuestPkt) -> Result<(), Option<HdrError>> {
    let mut buf = [0u8; NET_HDR_LEN + HEAD_PLAIN];
    let h = (len as usize).min(HEAD_PLAIN);
    c.read_at(mem, 0, &mut buf[..NET_HDR_LEN + h]).map_err(|_| None)?;
    let hdr = NetHdr::from_bytes(buf[..NetHdr::LEN].try_into().expect("10 bytes"));
    pkt.len = len as u32;
    pkt.head[..h].copy_from_slice(&buf[NET_HDR_LEN..NET_HDR_LEN + h]);
    pkt.head_len = h as u8;
    pkt.off = Offload::NONE;
    if hdr.flags & crate::offload::NEEDS_CSUM == 0 && hdr.gso_type == crate::offload::GSO_NONE {
        return Ok(());
    }
    let h = (len as usize).min(HEAD);
    if h > HEAD_PLAIN {
        c.read_at(mem, (NET_HDR_LEN + HEAD_PLAIN) as u64, &mut pkt.head[HEAD_PLAIN..h]).map_err(|_| None)?;
        pkt.head_len = h as u8;
    }
    pkt.off = validate(&hdr, pkt.headers(), len as usize, tx).map_err(Some)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_tso_segments_must_fit_the_mtu_untagged_or_tagged() {
        use crate::fdb::Fdb;
        use crate::fwd::{decide, Decision, PortView};
        use crate::offload::testutil::Spec;
        use crate::virtq::test_guest::{TestGuest, DATA};
        use crate::vlan::VlanMode;
        use pmd_bridge::guest_mem::Gpa;
        // IPv4 (20) and TCP with 12 bytes of options (32): 1448 + 52 = 1500.
        for (vlan, mss, fits) in [(false, 1448u16, true), (false, 1449, false), (true, 1448, true), (true, 1449, false)] {
            let spec = Spec { payload: 20000, vlan, ..Spec::V4 };
            let mut frame = spec.tso_hdr(mss).to_bytes().to_vec();
            frame.extend([0, 0]);
            frame.extend(spec.frame());
            let mut g = TestGuest::new(8);
            g.mem.write(Gpa(DATA), &frame).unwrap();
            g.desc(0, DATA, frame.len() as u32, 0, 0);
            g.offer(0);
            let (mut q, mut c, mut pkt) = (g.queue(), Chain::default(), GuestPkt::default());
            assert_eq!(q.pop(&g.mem, Direction::DeviceReads, &mut c), Ok(Pop::Chain));
            read_frame_head(&g.mem, &c, c.len() - NET_HDR_LEN as u64, Caps::ALL, &mut pkt).unwrap();
            let mode = if vlan { VlanMode::Trunk(Box::new(crate::vlan::VlanSet::new(&[1]))) } else { VlanMode::Access(1) };
            let port = PortView::new("p", 0, 1, mode, 1500);
            let d = decide(&pkt, &port, &[Some(port.clone())], &Fdb::new(64, 300), 1, &mut 0);
            assert_eq!(d == Decision::Drop(crate::counters::DropReason::Oversize), !fits, "mss {mss}, tagged {vlan}: {d:?}");
        }
    }

    #[test]
    fn regression_a_legacy_guest_is_refused() {
        const VERSION_1: u64 = 1 << 32;
        const MRG_RXBUF: u64 = 1 << 15;
        assert!(GuestFeatures::from_bits(MRG_RXBUF).is_err(), "10- or 12-byte header: not guessed");
        let f = GuestFeatures::from_bits(VERSION_1 | MRG_RXBUF).unwrap();
        assert!(f.mergeable && f.rx == Caps::NONE);
    }
}
