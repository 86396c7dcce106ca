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
//! - Packed rings: QEMU learns no position from a switch that went away
//!   (graceful or not), so the switch keeps each ring's position in a file
//!   beside the socket (`kept_positions`), and the next one resumes from
//!   it for the same QEMU (`KeptPosition`), with the same effects as a
//!   split ring after SIGKILL.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dataplane::copy_once::{return_parked, CopyOnceRx, CopyOnceTx, GuestFeatures, GuestRing, Interrupt, ZeroCopy};
use dataplane::flood::PortSet;
use dataplane::virtq::{KeptPosition, RingOps, RingSession, Virtqueue};
use pmd_bridge::eventfd::EventFd;
use pmd_bridge::extbuf::Lender;
use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::persist::SharedWords;
use pmd_bridge::{CallFd, VhostDevice};

/// Zero copy to NICs for a plan's guest transmit rings.
#[derive(Clone, Copy)]
pub struct ZeroCopyPlan {
    /// The NIC ports that can read this guest's memory.
    pub targets: PortSet,
    pub min_len: u32,
    /// Chains in flight per ring; 0: half the ring.
    pub in_flight: u16,
}

/// A vring's eventfds: the one that interrupts the guest, and the one it
/// kicks (which a PMD thread asleep until kicked waits on).
#[derive(Default)]
struct RingFds {
    call: Option<Arc<CallFd>>,
    kick: Option<Arc<EventFd>>,
}

#[derive(Default)]
pub struct CopyOnceState {
    /// The guest's memory while rings may be walked (None while rte_vhost
    /// changes it, or with no guest).
    pub mem: Option<Arc<GuestMemory>>,
    /// Our side of each vring, by virtio queue index, when not in a plan.
    queues: Vec<Option<Virtqueue>>,
    /// Each vring's eventfds, as of the last remap.
    fds: Vec<RingFds>,
    /// What the guest negotiated.
    features: u64,
    /// Each transmit vring's lender, when not in a plan: chains NICs hold
    /// stay out across plans, and go back to the guest from here while
    /// the ring is in none (`reclaim`).
    lenders: Vec<Option<Lender>>,
    /// Each vring's chains in NICs, as the PMD thread holding it last saw.
    gauges: Vec<Arc<AtomicU64>>,
    /// Where packed rings keep their positions, and the frontend's memory.
    kept: Option<(Arc<SharedWords>, u64)>,
}

/// Vrings a positions file has room for (32 queue pairs).
const KEPT_VRINGS: usize = 64;

/// The file beside the socket at `socket` where its packed rings keep
/// their positions across switch restarts.
pub fn kept_positions(socket: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(socket);
    let name = p.file_name().map_or("vhost".into(), |n| n.to_string_lossy());
    p.with_file_name(format!(".{name}.rings"))
}

impl CopyOnceState {
    /// Takes the memory and every vring of a new device, and asks the guest
    /// not to kick (we poll). Takes no rte_vhost queue lock.
    pub fn attach(&mut self, dev: &VhostDevice, kept: &std::path::Path) -> Result<(), String> {
        self.features = dev.negotiated_features().map_err(|e| e.to_string())?;
        if self.features & dataplane::virtq::VIRTIO_F_RING_PACKED != 0 {
            // Without the file the rings still run; only a restart of the
            // switch would lose their positions.
            let words = SharedWords::open(kept, KEPT_VRINGS * KeptPosition::WORDS).map_err(|e| format!("{}: {e}", kept.display()));
            let kept = words.and_then(|w| Ok((Arc::new(w), dev.memory_id().map_err(|e| e.to_string())?)));
            self.kept = kept.map_err(|e| eprintln!("vswitchd: packed ring positions not kept across restarts: {e}")).ok();
        }
        GuestFeatures::from_bits(self.features)?;
        self.queues = vec![None; dev.queue_pairs() as usize * 2];
        self.fds = (0..self.queues.len()).map(|_| RingFds::default()).collect();
        self.lenders = (0..self.queues.len()).map(|_| None).collect();
        self.gauges = (0..self.queues.len()).map(|_| Arc::default()).collect();
        self.remap(dev, true)
    }

    /// (Re)reads memory and ring addresses; `fresh` takes the indices from
    /// rte_vhost, otherwise ours are kept.
    pub fn remap(&mut self, dev: &VhostDevice, fresh: bool) -> Result<(), String> {
        let mem = dev.guest_memory().map_err(|e| e.to_string())?;
        for (idx, (slot, fds)) in self.queues.iter_mut().zip(self.fds.iter_mut()).enumerate() {
            let v = dev.vring(idx as u16).map_err(|e| e.to_string())?;
            *fds = RingFds { call: v.call.map(Arc::new), kick: v.kick.map(Arc::new) };
            if v.desc == 0 {
                continue; // not set up by the guest (yet)
            }
            let gpa = |hva: u64| mem.gpa_of(hva).ok_or(format!("vring {idx} outside guest memory"));
            let rings = [gpa(v.desc)?, gpa(v.avail)?, gpa(v.used)?];
            let kept = self.kept.as_ref().filter(|_| idx < KEPT_VRINGS).map(|(w, id)| (KeptPosition::new(Arc::clone(w), idx), *id));
            let indices = match (fresh, slot.as_ref(), kept.as_ref()) {
                (false, Some(q), _) => q.indices(),
                (_, _, Some((k, memory))) => k.resume(&mem, RingSession { desc: rings[0], size: v.size, base: (v.last_avail, v.last_used), memory: *memory }),
                _ => (v.last_avail, v.last_used),
            };
            let mut q = Virtqueue::new(self.features, v.size, rings, indices, &mem).map_err(|e| format!("vring {idx}: {e}"))?;
            if let (Some(p), Some((k, _))) = (q.packed_mut(), kept) {
                p.keep_position(k);
            }
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

    /// Chains NICs still hold, over every transmit ring (in a plan or not).
    pub fn lent(&self) -> u64 {
        let parked = |i: usize| self.lenders.get(i).and_then(Option::as_ref).map(|l| l.in_flight() as u64);
        (0..self.gauges.len()).map(|i| parked(i).unwrap_or_else(|| self.gauges[i].load(Ordering::Relaxed))).sum()
    }

    /// Returns to the guest the chains NICs freed while their ring is in no
    /// plan (between plans, the guest going): used entries written,
    /// published, the guest interrupted if it asked. Not while rte_vhost
    /// changes the memory or rings: they come back after, into the new ones.
    pub fn reclaim(&mut self, dev: Option<&VhostDevice>) {
        let Some(mem) = self.mem.clone() else { return };
        for (i, (l, q)) in self.lenders.iter_mut().zip(self.queues.iter_mut()).enumerate() {
            let (Some(l), Some(q)) = (l.as_mut(), q.as_mut()) else { continue };
            if return_parked(l, q, &mem) == Some(true) {
                interrupt(self.fds[i].call.as_deref(), dev, i as u16);
            }
        }
    }

    /// The guest goes and NICs still hold some of its chains: gives them
    /// back to it now, unsent as far as it knows (used entries written and
    /// published, as after a crash of the switch), so that its device can
    /// go. Returns the lenders with chains out: their slots, and the
    /// mapping NICs read the buffers from, must stay until NICs free them.
    pub fn give_up_lent(&mut self, dev: &VhostDevice) -> Vec<Lender> {
        self.reclaim(Some(dev));
        let mut out = Vec::new();
        for (i, (l, q)) in self.lenders.iter_mut().zip(self.queues.iter_mut()).enumerate() {
            let Some(l) = l.take().filter(|l| l.in_flight() > 0) else { continue };
            if let (Some(mem), Some(q)) = (self.mem.as_deref(), q.as_mut()) {
                l.in_flight_tags().for_each(|head| {
                    let _ = q.add_used(mem, head, 0);
                });
                if q.publish(mem).is_ok() && q.needs_interrupt(mem) {
                    interrupt(self.fds[i].call.as_deref(), Some(dev), i as u16);
                }
            }
            out.push(l);
        }
        out
    }

    /// The guest left while the switch runs: no position of its rings is
    /// to be resumed.
    pub fn forget_positions(&self) {
        if let Some((w, _)) = &self.kept {
            (0..KEPT_VRINGS).for_each(|i| KeptPosition::new(Arc::clone(w), i).forget());
        }
    }

    /// The device goes: our indices back to rte_vhost, then forget it all.
    /// Call it once `lent` is 0: a chain still out would never be returned.
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
        let interrupt = match self.fds.get(vring as usize).and_then(|f| f.call.clone()) {
            Some(fd) => Interrupt::Fd(fd),
            None => Interrupt::Vhost(Arc::clone(dev), vring),
        };
        Some(GuestRing::new(mem, q, interrupt, vring, GuestFeatures::from_bits(self.features).ok()?))
    }

    /// The guest's transmit ring of pair `pair`, for the thread polling it,
    /// lending frames bound for NICs as `zc` says.
    pub fn rx_ring(&mut self, dev: &Arc<VhostDevice>, pair: u16, zc: Option<ZeroCopyPlan>) -> Option<CopyOnceRx> {
        let vring = pair * 2 + 1;
        let size = self.queues.get(vring as usize)?.as_ref()?.size();
        let mut rx = CopyOnceRx::new(self.take(dev, vring)?);
        if let Some(kick) = self.fds.get(vring as usize).and_then(|f| f.kick.clone()) {
            rx = rx.with_kick(kick);
        }
        // A lender with chains out goes along even if nothing is lent any
        // more: only the ring's holder may return them.
        let bound = |z: &ZeroCopyPlan| if z.in_flight == 0 { (size / 2).max(1) } else { z.in_flight };
        let Some(lender) = self.lenders[vring as usize].take().or_else(|| zc.as_ref().map(|z| Lender::new(bound(z)))) else { return Some(rx) };
        let (targets, min_len) = zc.map_or((PortSet::EMPTY, u32::MAX), |z| (z.targets, z.min_len));
        let gauge = Arc::clone(&self.gauges[vring as usize]);
        Some(rx.with_zero_copy(ZeroCopy::new(lender, targets, min_len, gauge)))
    }

    /// The guest's receive ring of pair `pair`, for its one writer, which
    /// retries a delivery `retries` times while the ring is full.
    pub fn tx_ring(&mut self, dev: &Arc<VhostDevice>, pair: u16, retries: u32) -> Option<CopyOnceTx> {
        self.take(dev, pair * 2).map(|r| CopyOnceTx::new(r, retries))
    }

    /// A ring back from a plan, with its lender if it lent.
    pub fn put_back(&mut self, ring: GuestRing, lender: Option<Lender>) {
        let (vring, queue) = ring.into_queue();
        if let Some(slot) = self.queues.get_mut(vring as usize) {
            *slot = Some(queue);
        }
        if let (Some(l), Some(slot)) = (lender, self.lenders.get_mut(vring as usize)) {
            *slot = Some(l);
        }
    }
}

/// Interrupts the guest on vring `vring` for chains returned from the
/// control thread. A call that fails is not retried: the ring comes back
/// into a plan interrupting its guest once (`GuestRing::new`).
fn interrupt(call: Option<&CallFd>, dev: Option<&VhostDevice>, vring: u16) {
    let _ = match (call, dev) {
        (Some(fd), _) => fd.signal(),
        (None, Some(d)) => d.call_nonblock(vring),
        (None, None) => false,
    };
}
