//! Control-thread state of a copy-once vhost port: the guest's memory and
//! our side of each of its rings, kept here between plans so that ring
//! indices survive replans, memory-table changes and reconnects.
//!
//! What a guest sees across a switch restart:
//! - Graceful stop (SIGTERM): every plan returns its rings, the last burst's
//!   copies run and its used indices are published, and `hand_back` gives
//!   our indices to rte_vhost, which answers QEMU's GET_VRING_BASE with
//!   them. The next switch resumes exactly there: nothing is delivered
//!   twice, nothing replayed.
//! - SIGKILL: no index is handed back. QEMU, finding GET_VRING_BASE
//!   unanswered, resumes each ring from its used index, which we publish
//!   after every burst. So at most the burst in flight at the kill is
//!   affected, per ring: up to 32 frames the guest transmitted may be sent
//!   a second time (their chains were walked but not yet returned), and
//!   frames being delivered into the guest whose used index was not yet
//!   published are lost (their buffers are offered again, unread). Nothing
//!   older is replayed and nothing is corrupted: a used entry is never
//!   visible before its bytes.
use std::sync::Arc;

use dataplane::copy_once::{CopyOnceRx, CopyOnceTx, GuestFeatures, GuestRing, Interrupt};
use dataplane::virtq::{RingOps, Virtqueue};
use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::{CallFd, VhostDevice};

#[derive(Default)]
pub struct CopyOnceState {
    /// The guest's memory while rings may be walked (None while rte_vhost
    /// changes it, or with no guest).
    pub mem: Option<Arc<GuestMemory>>,
    /// Our side of each vring, by virtio queue index, when not in a plan.
    queues: Vec<Option<Virtqueue>>,
    /// Each vring's call eventfd, as of the last remap.
    calls: Vec<Option<Arc<CallFd>>>,
    /// What the guest negotiated.
    features: u64,
}

impl CopyOnceState {
    /// Takes the memory and every vring of a new device, and asks the guest
    /// not to kick (we poll). Takes no rte_vhost queue lock.
    pub fn attach(&mut self, dev: &VhostDevice) -> Result<(), String> {
        self.features = dev.negotiated_features().map_err(|e| e.to_string())?;
        GuestFeatures::from_bits(self.features)?;
        self.queues = vec![None; dev.queue_pairs() as usize * 2];
        self.calls = (0..self.queues.len()).map(|_| None).collect();
        self.remap(dev, true)
    }

    /// (Re)reads memory and ring addresses; `fresh` takes the indices from
    /// rte_vhost, otherwise ours are kept.
    pub fn remap(&mut self, dev: &VhostDevice, fresh: bool) -> Result<(), String> {
        let mem = dev.guest_memory().map_err(|e| e.to_string())?;
        for (idx, (slot, call)) in self.queues.iter_mut().zip(self.calls.iter_mut()).enumerate() {
            let v = dev.vring(idx as u16).map_err(|e| e.to_string())?;
            *call = v.call.map(Arc::new);
            if v.desc == 0 {
                continue; // not set up by the guest (yet)
            }
            let gpa = |hva: u64| mem.gpa_of(hva).ok_or(format!("vring {idx} outside guest memory"));
            let indices = match (fresh, slot.as_ref()) {
                (false, Some(q)) => q.indices(),
                _ => (v.last_avail, v.last_used),
            };
            let rings = [gpa(v.desc)?, gpa(v.avail)?, gpa(v.used)?];
            let q = Virtqueue::new(self.features, v.size, rings, indices, &mem).map_err(|e| format!("vring {idx}: {e}"))?;
            // Kicks off while we poll, written into the used ring ourselves:
            // rte_vhost_enable_guest_notification would take the queue lock,
            // which a message handler waiting on our memory may hold.
            q.suppress_kicks(&mem).map_err(|e| format!("vring {idx}: {e:?}"))?;
            *slot = Some(q);
        }
        self.mem = Some(Arc::new(mem));
        Ok(())
    }

    /// Where each ring stands, "vring: avail/used", for the daemon's log
    /// (a guest that comes, goes or migrates resumes from these).
    pub fn describe(&self) -> String {
        let rings: Vec<String> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| match q {
                Some(q) => {
                    let (a, u) = q.indices();
                    format!("{i}: {a}/{u}")
                }
                None => format!("{i}: -"),
            })
            .collect();
        rings.join(", ")
    }

    /// Lets rte_vhost change memory or rings: every ring must be back here.
    pub fn release(&mut self) {
        self.mem = None;
    }

    /// The device goes: our indices back to rte_vhost, then forget it all.
    pub fn hand_back(&mut self, dev: &VhostDevice) {
        for (idx, q) in self.queues.iter().enumerate() {
            if let Some(q) = q {
                let (a, u) = q.indices();
                let _ = dev.set_vring_base(idx as u16, a, u);
            }
        }
        *self = CopyOnceState::default();
    }

    fn take(&mut self, dev: &Arc<VhostDevice>, vring: u16) -> Option<GuestRing> {
        let mem = Arc::clone(self.mem.as_ref()?);
        let q = self.queues.get_mut(vring as usize)?.take()?;
        let interrupt = match self.calls.get(vring as usize).cloned().flatten() {
            Some(fd) => Interrupt::Fd(fd),
            None => Interrupt::Vhost(Arc::clone(dev), vring),
        };
        Some(GuestRing::new(mem, q, interrupt, vring, GuestFeatures::from_bits(self.features).ok()?))
    }

    /// The guest's transmit ring of pair `pair`, for the thread polling it.
    pub fn rx_ring(&mut self, dev: &Arc<VhostDevice>, pair: u16) -> Option<CopyOnceRx> {
        self.take(dev, pair * 2 + 1).map(CopyOnceRx::new)
    }

    /// The guest's receive ring of pair `pair`, for its one writer, which
    /// retries a delivery `retries` times while the ring is full.
    pub fn tx_ring(&mut self, dev: &Arc<VhostDevice>, pair: u16, retries: u32) -> Option<CopyOnceTx> {
        self.take(dev, pair * 2).map(|r| CopyOnceTx::new(r, retries))
    }

    /// A ring back from a plan.
    pub fn put_back(&mut self, ring: GuestRing) {
        let (vring, queue) = ring.into_queue();
        if let Some(slot) = self.queues.get_mut(vring as usize) {
            *slot = Some(queue);
        }
    }
}
