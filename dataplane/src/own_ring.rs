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
use pmd_bridge::{Burst, Mbuf, Mempool, VhostDevice};

use crate::copy_list::CopyList;
use crate::packet::PacketBuf;
use crate::virtio_net::{deliver, Delivery, FrameSource, NET_HDR_LEN};
use crate::virtq::{Chain, ChainError, Direction, Pop, Refused, SplitQueue};

/// Bytes of each frame copied to scratch: every header the switch reads.
pub const HEAD: usize = 64;

/// A frame still in a guest's transmit buffer: its headers in scratch.
#[derive(Clone, Copy)]
pub struct GuestPkt {
    head: [u8; HEAD],
    head_len: u8,
    len: u32,
}

impl Default for GuestPkt {
    fn default() -> Self {
        GuestPkt { head: [0; HEAD], head_len: 0, len: 0 }
    }
}

impl PacketBuf for GuestPkt {
    fn frame_len(&self) -> usize {
        self.len as usize
    }

    fn headers(&self) -> &[u8] {
        &self.head[..self.head_len as usize]
    }
}

pub struct OwnRing {
    pub mem: Arc<GuestMemory>,
    pub dev: Arc<VhostDevice>,
    pub queue: SplitQueue,
    /// The virtio queue index (even: guest receive, odd: guest transmit).
    pub vring: u16,
    pub mergeable: bool,
    pub broken: bool,
    /// Chains returned empty since the PMD thread last counted them.
    pub refused: Refused,
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
    pub fn new(mem: Arc<GuestMemory>, dev: Arc<VhostDevice>, queue: SplitQueue, vring: u16, mergeable: bool) -> OwnRing {
        OwnRing {
            mem,
            dev,
            queue,
            vring,
            mergeable,
            broken: false,
            refused: Refused::default(),
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
        self.call_pending = !self.dev.call_nonblock(self.vring);
    }

    fn notify(&mut self) {
        if self.queue.guest_wants_interrupt(&self.mem) {
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
        // Pass 2: the headers into scratch.
        let mut n = 0;
        for i in 0..k {
            let c = &self.chains[i];
            let len = c.len() - NET_HDR_LEN as u64;
            let h = (len as usize).min(HEAD);
            let mut head = [0u8; HEAD];
            if c.read_at(&self.mem, NET_HDR_LEN as u64, &mut head[..h]).is_err() {
                // Unreachable for a chain that passed the length check;
                // handled anyway: back empty, the rest moved up.
                let _ = self.queue.add_used(&self.mem, c.head, 0);
                self.refused.add(ChainError::BadLength);
                bad += 1;
                continue;
            }
            if i != n {
                self.chains.swap(i, n);
            }
            out[n] = GuestPkt { head, head_len: h as u8, len: len as u32 };
            n += 1;
        }
        self.in_flight = n;
        if bad > 0 && n == 0 {
            let _ = self.queue.publish(&self.mem);
            self.notify();
        }
        n
    }

    /// A copy of in-flight frame `i` in an mbuf chain (the one payload copy
    /// of a frame that leaves for a port that is not a copy-once guest).
    pub fn materialize(&mut self, i: usize, pkt: &GuestPkt, pool: &Mempool) -> Option<Mbuf> {
        self.scratch.clear();
        self.scratch.extend_from_slice(pkt.headers());
        let rest = pkt.len as u64 - pkt.head_len as u64;
        if rest > 0 {
            let start = self.scratch.len();
            self.scratch.resize(start + rest as usize, 0);
            self.chains[i].read_at(&self.mem, (NET_HDR_LEN + pkt.head_len as usize) as u64, &mut self.scratch[start..]).ok()?;
        }
        pool.alloc_from(&self.scratch)
    }

    /// Delivers in-flight frame `i` of `src` into this guest (output port
    /// `out`): the headers from scratch, the payload listed in `copies` for
    /// its one copy, guest to guest, after the burst.
    pub fn deliver_from(&mut self, src: &OwnRing, i: usize, pkt: &GuestPkt, copies: &mut CopyList, out: u16) -> Delivery {
        if self.broken {
            return Delivery::NoBuffers;
        }
        let off = (NET_HDR_LEN + pkt.head_len as usize) as u64;
        let rest = pkt.len as u64 - pkt.head_len as u64;
        let tail = (rest > 0).then_some((&*src.mem, &src.chains[i], off, rest));
        match deliver(&mut self.queue, &self.mem, &FrameSource { head: pkt.headers(), tail }, self.mergeable, &mut self.rx_chains, Some((copies, out))) {
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
            let _ = self.queue.publish(&self.mem);
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
            let _ = self.queue.publish(&self.mem);
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
            match deliver(&mut self.queue, &self.mem, &FrameSource { head, tail: None }, self.mergeable, &mut self.rx_chains, None) {
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
            let _ = self.queue.publish(&self.mem);
            self.notify();
        }
        burst.free_front(done);
        done - bad
    }
}
