//! Zero copy to NICs, the control thread's part: which NICs each guest's
//! frames may be lent to (its memory mapped for their devices), chains
//! NICs still hold when a guest's rings are in no plan, and guests that go
//! while NICs hold their buffers.
//!
//! A NIC reads lent buffers through the switch's own mapping of the guest's
//! memory (`LendMap`), which each chain out holds: rte_vhost may change or
//! unmap its own mapping meanwhile without waiting for any NIC. Chains the
//! NICs free while their ring is in no plan are returned to the guest from
//! here (`reclaim`). A guest that goes is handed its ring indices back once
//! nothing of it is out, or after `DEPART_DEADLINE` with what is still out
//! given back to it unsent (`Departing`): rte_vhost's destroy_device waits
//! for the device, and ends the process if it waits too long (a NIC whose
//! link is down may hold buffers for good).
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::counters::MAX_PORTS;
use dataplane::flood::PortSet;
use pmd_bridge::dma::DmaKind;
use pmd_bridge::extbuf::Lender;
use pmd_bridge::{VhostDevice, VhostSocket};

use super::{PortIo, PortState, Switch};
use crate::copy_once_state::{CopyOnceState, ZeroCopyPlan};

/// How long a departing guest waits for NICs to give its buffers back
/// before they are given back to it unsent: well inside rte_vhost's own
/// wait for the device (10 s: see pmd_bridge's vhost module).
const DEPART_DEADLINE: Duration = Duration::from_secs(5);

/// A guest gone (its device destroyed, or its port deleted) while NICs
/// held some of its buffers.
pub(super) struct Departing {
    name: String,
    /// Until its chains are all back or the deadline passes.
    guest: Option<Gone>,
    /// Lenders whose chains the guest was given back unsent: kept, with the
    /// mapping NICs read, until the NICs free them.
    orphans: Vec<Lender>,
    since: Instant,
}

/// Fields drop in order: the device and its memory before the socket, whose
/// unregistering waits for them.
struct Gone {
    dev: Arc<VhostDevice>,
    own: CopyOnceState,
    /// A deleted port's socket, unregistered only after the device is let go.
    _sock: Option<VhostSocket>,
}

impl Departing {
    /// Returns what NICs freed; lets the guest go once nothing of it is out
    /// or at the deadline. Whether anything is left to wait for.
    fn reclaim(&mut self) -> bool {
        if let Some(g) = &mut self.guest {
            g.own.reclaim(Some(&g.dev));
            let lent = g.own.lent();
            if lent == 0 {
                eprintln!("vswitchd: port {}: every buffer back from the NICs; guest let go", self.name);
            } else if self.since.elapsed() >= DEPART_DEADLINE {
                self.orphans = g.own.give_up_lent(&g.dev);
                eprintln!(
                    "vswitchd: port {}: NICs held {lent} of the departed guest's buffers for {DEPART_DEADLINE:?}: given back to it unsent; the NICs read them from the switch's own mapping until they free them",
                    self.name
                );
            }
            if lent == 0 || !self.orphans.is_empty() {
                g.own.hand_back(&g.dev);
                self.guest = None;
            }
        }
        self.orphans.retain_mut(|l| {
            l.reap(|_| ());
            l.in_flight() > 0
        });
        self.guest.is_some() || !self.orphans.is_empty()
    }
}

impl Switch {
    /// Per port slot, how a copy-once guest's transmit rings lend in the
    /// next plan: to the NIC ports whose devices can read its memory
    /// (mapped here for those that need it, once per memory and device).
    pub(super) fn zero_copy_plans(&self) -> Vec<Option<ZeroCopyPlan>> {
        let sw = &self.cfg.switch;
        (0..MAX_PORTS as u16)
            .map(|slot| {
                let p = self.slots.port(slot);
                let PortState { io: PortIo::Vhost { own: Some(own), .. }, .. } = p? else { return None };
                let mem = own.mem.as_ref().filter(|_| sw.zero_copy)?;
                let mut targets = PortSet::EMPTY;
                for nic in self.slots.ports() {
                    if let PortIo::Eth(port) = &nic.io {
                        match mem.dma_map(port) {
                            Ok(()) => targets.insert(nic.slot),
                            Err(e) if port.dma_kind() == DmaKind::Mapped => {
                                eprintln!("vswitchd: port {}: frames to {} are copied, not lent: {e}", p?.cfg.name, nic.cfg.name)
                            }
                            Err(_) => {}
                        }
                    }
                }
                Some(ZeroCopyPlan { targets, min_len: sw.zero_copy_min_bytes, in_flight: sw.zero_copy_in_flight })
            })
            .collect()
    }

    /// NIC port `port` is about to close: off every guest memory first.
    pub(super) fn dma_unmap_port(&self, port: u16) {
        for st in self.slots.ports() {
            if let PortIo::Vhost { own: Some(CopyOnceState { mem: Some(mem), .. }), .. } = &st.io {
                mem.dma_unmap(port);
            }
        }
    }

    /// Returns what NICs freed of rings in no plan; lets departed guests go
    /// once nothing of theirs is out (from `tick`).
    pub(super) fn reclaim_lent(&mut self) {
        for st in self.slots.ports_mut() {
            if let PortIo::Vhost { own: Some(own), dev, .. } = &mut st.io {
                own.reclaim(dev.as_deref());
            }
        }
        self.departing.retain_mut(Departing::reclaim);
    }

    /// A guest that goes: handed its indices back now, or once NICs have
    /// given back what they hold of it. Its socket (a deleted port's) goes
    /// after its device.
    pub(super) fn depart(&mut self, name: &str, dev: Arc<VhostDevice>, mut own: CopyOnceState, sock: Option<VhostSocket>) {
        own.reclaim(Some(&dev));
        if own.lent() == 0 {
            own.hand_back(&dev);
            drop(dev);
            drop(sock);
            return;
        }
        eprintln!("vswitchd: port {name}: guest gone while NICs hold {} of its buffers; waiting for them", own.lent());
        let guest = Some(Gone { dev, own, _sock: sock });
        self.departing.push(Departing { name: name.to_string(), guest, orphans: Vec::new(), since: Instant::now() });
    }

    /// At a stop: waits (up to `deadline`) for departing guests' buffers.
    pub(super) fn drain_departing(&mut self, deadline: Duration) {
        let start = Instant::now();
        while !self.departing.is_empty() && start.elapsed() < deadline {
            self.reclaim_lent();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
