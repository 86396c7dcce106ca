//! A copy-once vhost port's queue: the switch walks the guest's ring itself.
//!
//! This first stage bridges to the mbuf pipeline: what the guest sends is
//! copied once into mbufs, and mbufs are copied once into the guest's
//! receive buffers (VM to NIC and NIC to VM: one copy each; VM to VM still
//! two, until pass 2 moves guest payloads directly). Bad chains go back to
//! the guest empty and are counted; a ring whose state is impossible stops
//! being polled. Exactly one thread owns each `OwnRing` (the plan gives a
//! guest receive ring to one PMD thread only: per-thread queues).
use std::sync::Arc;

use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::{Burst, Mempool, VhostDevice};

use crate::virtio_net::{deliver, Delivery, FrameSource, NET_HDR_LEN};
use crate::virtq::{Chain, Direction, Pop, SplitQueue};

pub struct OwnRing {
    pub mem: Arc<GuestMemory>,
    pub dev: Arc<VhostDevice>,
    pub queue: SplitQueue,
    /// The virtio queue index (even: guest receive, odd: guest transmit).
    pub vring: u16,
    pub mergeable: bool,
    pub broken: bool,
    scratch: Vec<u8>,
    chains: Vec<Chain>,
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
            scratch: Vec::with_capacity(crate::virtq::MAX_READ as usize),
            chains: (0..pmd_bridge::BURST).map(|_| Chain::default()).collect(),
        }
    }

    fn notify(&self) {
        if self.queue.guest_wants_interrupt(&self.mem) {
            // Never waits on the queue lock a message handler may hold.
            self.dev.call_nonblock(self.vring);
        }
    }

    /// Takes what the guest transmitted into `burst` (one copy each);
    /// returns (frames received, bad chains returned).
    pub fn recv(&mut self, pool: &Mempool, burst: &mut Burst) -> (usize, u64) {
        if self.broken {
            return (0, 0);
        }
        let room = burst.capacity() - burst.len();
        let avail = match self.queue.available(&self.mem) {
            Ok(n) => n as usize,
            Err(_) => {
                self.broken = true;
                return (0, 0);
            }
        };
        let (mut good, mut bad) = (0usize, 0u64);
        for _ in 0..avail.min(room) {
            match self.queue.pop(&self.mem, Direction::DeviceReads, &mut self.chains[good]) {
                Ok(Pop::Chain) if self.chains[good].len() > NET_HDR_LEN as u64 => good += 1,
                Ok(Pop::Chain) => {
                    // A runt: not even a header. Back, empty.
                    let _ = self.queue.add_used(&self.mem, self.chains[good].head, 0);
                    bad += 1;
                }
                Ok(Pop::Bad { head, .. }) => {
                    let _ = self.queue.add_used(&self.mem, head, 0);
                    bad += 1;
                }
                Ok(Pop::Empty) => break,
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
        let mut taken = 0;
        if good > 0 && pool.alloc_bulk(burst, good) {
            let first = burst.len() - good;
            for i in 0..good {
                self.scratch.clear();
                let ok = self.chains[i].read(&self.mem, NET_HDR_LEN as u64, &mut self.scratch).is_ok();
                let slot = &mut burst.as_mut_slice()[first + i];
                let filled = ok && slot.fill(&self.scratch).is_some();
                if !filled && ok {
                    // Larger than one mbuf: a chain of them.
                    if let Some(m) = pool.alloc_from(&self.scratch) {
                        *slot = m;
                    }
                }
                let _ = self.queue.add_used(&self.mem, self.chains[i].head, 0);
            }
            taken = good;
        } else {
            // No mbufs: give the chains back untouched for the next poll.
            self.queue.unpop(good as u16);
        }
        if taken > 0 || bad > 0 {
            let _ = self.queue.publish(&self.mem);
            self.notify();
        }
        (taken, bad)
    }

    /// Copies mbufs from the front of `burst` into the guest's receive
    /// buffers, frees them, and leaves the rest (guest out of buffers) in
    /// `burst`; returns (delivered, dropped for a bad chain).
    pub fn send(&mut self, burst: &mut Burst) -> (usize, u64) {
        if self.broken {
            return (0, 0);
        }
        let (mut done, mut bad) = (0usize, 0u64);
        for m in burst.iter() {
            let head: &[u8] = if m.nb_segs() == 1 {
                m.data()
            } else {
                self.scratch.clear();
                m.segments().for_each(|s| self.scratch.extend_from_slice(s));
                &self.scratch
            };
            match deliver(&mut self.queue, &self.mem, &FrameSource { head, tail: None }, self.mergeable) {
                Ok(Delivery::Done { .. }) => done += 1,
                Ok(Delivery::BadChain) => {
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
        (done - bad as usize, bad)
    }
}
