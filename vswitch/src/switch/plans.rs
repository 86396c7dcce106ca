//! The plans: which thread polls each rx queue (`placement`) and sends on
//! each port, with the queue handles each kind of port gives; and the
//! plans taken back.
use std::sync::Arc;

use dataplane::counters::MAX_PORTS;
use dataplane::pmd_loop::{PmdPlan, RxSource};
use dataplane::port_io::{RxPort, TxPort};
use dataplane::vxlan::tx::VxlanTx;
use dataplane::vxlan::{Tunnel, Underlay};
use pmd_bridge::cycles::tsc_hz;

use super::placement::{Rxq, RxqKey};
use super::Switch;
use crate::config::PortKind;
use crate::ports::{PortIo, PortState};

/// A vxlan port and what its sender needs of its underlay.
struct TunnelPlan {
    slot: u16,
    underlay: u16,
    mac: [u8; 6],
    mtu: u16,
    ip_csum_offload: bool,
    vtep: Arc<dataplane::vxlan::Vtep>,
}

/// A plan's queues while `build_plans` places them.
struct PlanParts {
    rx: Vec<RxSource>,
    tx: Vec<Option<TxPort>>,
}

impl Default for PlanParts {
    fn default() -> Self {
        PlanParts { rx: Vec::new(), tx: (0..MAX_PORTS).map(|_| None).collect() }
    }
}

impl Switch {
    /// Puts the copy-once rings of a finished plan back with their ports
    /// (a transmit ring's lender with it).
    pub(super) fn recover(&mut self, plan: PmdPlan) {
        let rings = plan.rx.into_iter().filter_map(|s| match s.port {
            RxPort::CopyOnce(r) => Some((s.slot, r.into_parts())),
            _ => None,
        });
        let tx_rings = plan.tx.into_iter().enumerate().filter_map(|(slot, p)| match p {
            Some(TxPort::CopyOnce(r)) => Some((slot as u16, (r.into_ring(), None))),
            _ => None,
        });
        for (slot, (ring, lender)) in rings.chain(tx_rings) {
            if let Some(PortState { io: PortIo::Vhost { own: Some(own), .. }, .. }) = self.slots[slot].port.as_mut() {
                own.put_back(ring, lender);
            }
        }
    }

    /// The thread index of each core pinned to, for `rxq_pmd`.
    fn pinned(&self, st: &PortState, queue: u16) -> Option<usize> {
        let core = st.cfg.rxq_pmd.as_ref()?.get(queue as usize)?;
        self.pmds.iter().position(|p| p.core == *core)
    }

    /// Every rx queue the next plans poll, with its pin.
    pub(super) fn rxqs(&self) -> Vec<Rxq> {
        let mut out = Vec::new();
        for st in self.slots.ports() {
            for queue in 0..polled_queues(st) {
                out.push(Rxq { key: RxqKey { slot: st.slot, gen: st.gen, queue }, pinned: self.pinned(st, queue) });
            }
        }
        out
    }

    /// The plans for the ports as they are: each rx queue on the thread
    /// `placement` gives it, every thread able to send to every port.
    pub(super) fn build_plans(&mut self) -> Result<Vec<PmdPlan>, String> {
        let n = self.pmds.len();
        let tunnels = self.tunnels();
        let underlay = |slot| {
            let on = tunnels.iter().filter(|t| t.underlay == slot);
            let tunnels: Vec<Tunnel> = on.clone().map(|t| Tunnel { slot: t.slot, vtep: Arc::clone(&t.vtep) }).collect();
            let mac = on.map(|t| t.mac).next()?;
            Some(Arc::new(Underlay { mac, tunnels }))
        };
        let view = |slot| Some(self.slots.port(slot)?.view().with_policer(self.slots[slot].policer.clone()).with_underlay(underlay(slot)));
        let table = Arc::new((0..MAX_PORTS as u16).map(view).collect::<Vec<_>>());
        let rxqs = self.rxqs();
        self.placement.place(&rxqs, n);
        let mut plans: Vec<PlanParts> = (0..n).map(|_| PlanParts::default()).collect();
        let retries = self.cfg.switch.vhost_retries;
        let zero_copy = self.zero_copy_plans();
        let placement = &self.placement;
        for st in self.slots.ports_mut() {
            let (slot, queues) = (st.slot, polled_queues(st));
            let thread = |queue| placement.thread(RxqKey { slot, gen: st.gen, queue }).expect("every polled queue placed");
            match &mut st.io {
                PortIo::Eth(port) => {
                    for q in 0..queues {
                        let h = port.rx_queue(q).map_err(|e| e.to_string())?;
                        plans[thread(q)].rx.push(RxSource { slot, queue: q, port: RxPort::Eth(h) });
                    }
                    for (i, plan) in plans.iter_mut().enumerate() {
                        let h = port.tx_queue(i as u16).map_err(|e| e.to_string())?;
                        plan.tx[slot as usize] = Some(TxPort::Eth(h));
                    }
                }
                PortIo::Vhost { dev: Some(dev), own: Some(own), .. } => {
                    for q in 0..queues {
                        if let Some(r) = own.rx_ring(dev, q, zero_copy[slot as usize]) {
                            plans[thread(q)].rx.push(RxSource { slot, queue: q, port: RxPort::CopyOnce(Box::new(r)) });
                        }
                    }
                    // One writer per guest receive ring: thread i writes
                    // pair i's. A thread beyond the guest's pairs cannot
                    // reach it (its packets count as port_down): give the
                    // guest as many queue pairs as there are PMD threads.
                    for (i, plan) in plans.iter_mut().enumerate().take(queues as usize) {
                        plan.tx[slot as usize] = own.tx_ring(dev, i as u16, retries).map(|r| TxPort::CopyOnce(Box::new(r)));
                    }
                }
                PortIo::Vhost { dev: Some(dev), .. } => {
                    for q in 0..queues {
                        plans[thread(q)].rx.push(RxSource { slot, queue: q, port: RxPort::Vhost(dev.rx_queue(q)) });
                    }
                    // Threads beyond the pairs share a guest queue: rte_vhost
                    // serialises enqueues on it with its own queue lock.
                    for (i, plan) in plans.iter_mut().enumerate() {
                        let q = dev.tx_queue(i as u16 % queues.max(1));
                        plan.tx[slot as usize] = Some(TxPort::Vhost { q, retries });
                    }
                }
                PortIo::Vhost { dev: None, .. } => {}
                PortIo::Vxlan(_) => {
                    let Some(t) = tunnels.iter().find(|t| t.slot == slot) else { continue };
                    for plan in plans.iter_mut() {
                        let v = VxlanTx::new(Arc::clone(&t.vtep), t.underlay, t.mac, t.mtu, t.ip_csum_offload, tsc_hz());
                        plan.tx[slot as usize] = Some(TxPort::Vxlan(Box::new(v)));
                    }
                }
            }
        }
        Ok(plans.into_iter().enumerate().map(|(i, p)| PmdPlan::new(Arc::clone(&table), p.rx, p.tx).with_taps(self.taps(i)).with_flows(self.pmd_flows(i))).collect())
    }

    /// Every vxlan port whose underlay is open, with that underlay's
    /// address, MTU and checksum offload.
    fn tunnels(&self) -> Vec<TunnelPlan> {
        let mut out = Vec::new();
        for st in self.slots.ports() {
            let (PortIo::Vxlan(vtep), PortKind::Vxlan { underlay, .. }) = (&st.io, &st.cfg.kind) else { continue };
            let Some(u) = self.slots.by_name(underlay).and_then(|s| self.slots.port(s)) else { continue };
            let PortIo::Eth(nic) = &u.io else { continue };
            let Ok(mac) = nic.mac() else { continue };
            let ip_csum_offload = u.cfg.offloads && nic.tx_offload_caps().ipv4_csum;
            out.push(TunnelPlan { slot: st.slot, underlay: u.slot, mac, mtu: u.cfg.mtu, ip_csum_offload, vtep: Arc::clone(vtep) });
        }
        out
    }

}

/// How many rx queues of a port the plans poll: a NIC's, or the pairs a
/// guest enabled (up to the port's `rx_queues`) once its rings are ours.
fn polled_queues(st: &PortState) -> u16 {
    match &st.io {
        PortIo::Eth(_) => st.cfg.rx_queues,
        // Rings being changed, or not taken yet.
        PortIo::Vhost { own: Some(own), .. } if own.mem.is_none() => 0,
        PortIo::Vhost { dev: Some(dev), enabled_pairs, .. } => dev.queue_pairs().min(st.cfg.rx_queues).min(*enabled_pairs).max(1),
        PortIo::Vhost { dev: None, .. } | PortIo::Vxlan(_) => 0,
    }
}
