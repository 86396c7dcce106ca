//! Zero copy to NICs, the control thread's part: which NICs each guest's
//! frames may be lent to (its memory mapped for their devices), chains
//! NICs still hold when a guest's rings are in no plan, and guests that go
//! while NICs hold their buffers.
//!
//! A guest's memory stays mapped while any of its buffers is in a NIC: each
//! chain out holds the memory (`GuestMemory`), and rte_vhost unmaps only
//! once every holder let go (its memory-change hook and destroy_device
//! wait for them, up to their deadline). Meanwhile the PMD threads' NIC
//! queues keep running and reclaiming (`TxQueue::reclaim`), and the chains
//! that come back are returned to the guest from here (`reclaim`). A guest
//! that goes is handed its ring indices back only once nothing of it is
//! out (`Departing`).
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::counters::MAX_PORTS;
use dataplane::flood::PortSet;
use pmd_bridge::dma::DmaKind;
use pmd_bridge::{VhostDevice, VhostSocket};

use super::{PortIo, PortState, Switch};
use crate::copy_once_state::{CopyOnceState, ZeroCopyPlan};

/// How long a departing guest waits for NICs to give its buffers back
/// before it is said to be stuck (rte_vhost's own wait ends the process at
/// 10 s: see pmd_bridge's vhost module).
const DEPART_WARN: Duration = Duration::from_secs(5);

/// A guest gone (its device destroyed, or its port deleted) while NICs
/// held some of its buffers: kept until they are all back. Fields drop in
/// order: the device and its memory before the socket, whose unregistering
/// waits for them.
pub(super) struct Departing {
    name: String,
    dev: Arc<VhostDevice>,
    own: CopyOnceState,
    /// A deleted port's socket, unregistered only after the device is let go.
    _sock: Option<VhostSocket>,
    since: Instant,
    warned: bool,
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
        self.departing.retain_mut(|d| {
            d.own.reclaim(Some(&d.dev));
            let lent = d.own.lent();
            if lent == 0 {
                eprintln!("vswitchd: port {}: every buffer back from the NICs; guest let go", d.name);
                d.own.hand_back(&d.dev);
                return false;
            }
            if !d.warned && d.since.elapsed() > DEPART_WARN {
                d.warned = true;
                eprintln!("vswitchd: port {}: NICs still hold {lent} of the departed guest's buffers; its memory stays mapped", d.name);
            }
            true
        });
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
        self.departing.push(Departing { name: name.to_string(), dev, own, _sock: sock, since: Instant::now(), warned: false });
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
