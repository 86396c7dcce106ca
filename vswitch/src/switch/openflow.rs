//! The switch as the OpenFlow agent's data path: its ports and counters,
//! the flow table's way into the plans (a replan, as every change to the
//! PMD threads), and the rings between the threads and the agent.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dataplane::capture::CaptureRing;
use dataplane::counters::DropReason;
use dataplane::flow::{self, port_no, Action, FlowTable, PacketIn, PmdFlows, PACKET_IN_WORDS};

use super::{PortIo, Switch};
use crate::openflow::agent::{Agent, Datapath};
use crate::openflow::msg::{PortDesc, PortStats};
use crate::protocol::FlowsInfo;

/// OFPPS_LINK_DOWN, OFPPS_LIVE.
const LINK_DOWN: u32 = 1;
const LIVE: u32 = 4;

/// The OpenFlow side of the switch.
pub(super) struct OpenFlow {
    agent: Option<Agent>,
    /// The table in the plans (None: no flows, the L2 path alone).
    table: Option<Arc<FlowTable>>,
    /// Each PMD thread's frames for the controller.
    packet_in: Vec<Arc<CaptureRing>>,
    /// PACKET_OUTs, read by the first thread.
    inject: Arc<CaptureRing>,
    /// Misses counted by tables no longer in use.
    misses_base: u64,
    scratch: Vec<u8>,
}

impl OpenFlow {
    pub(super) fn new(threads: usize) -> OpenFlow {
        OpenFlow {
            agent: None,
            table: None,
            packet_in: (0..threads).map(|_| Arc::new(CaptureRing::new(PACKET_IN_WORDS))).collect(),
            inject: Arc::new(CaptureRing::new(PACKET_IN_WORDS)),
            misses_base: 0,
            scratch: Vec::with_capacity(dataplane::offload::MAX_FRAME),
        }
    }
}

impl Switch {
    /// Serves the management socket and connects to the controller, if
    /// the config names one.
    pub fn start_openflow(&mut self) -> Result<(), String> {
        let sw = &self.cfg.switch;
        let agent = Agent::start(&sw.openflow_socket, sw.controller.as_deref())?;
        self.openflow.agent = Some(agent);
        Ok(())
    }

    pub(super) fn poll_openflow(&mut self) {
        if let Some(mut agent) = self.openflow.agent.take() {
            agent.poll(self);
            self.openflow.agent = Some(agent);
        }
    }

    /// Thread `i`'s flow state for its next plan.
    pub(super) fn pmd_flows(&self, i: usize) -> Option<Box<PmdFlows>> {
        let of = &self.openflow;
        let table = Arc::clone(of.table.as_ref()?);
        Some(Box::new(PmdFlows::new(table, Arc::clone(&of.packet_in[i]), (i == 0).then(|| Arc::clone(&of.inject)))))
    }

    pub(super) fn show_flows(&self) -> FlowsInfo {
        self.openflow.agent.as_ref().map(|a| a.show(self)).unwrap_or_default()
    }
}

impl Datapath for Switch {
    fn of_ports(&self) -> Vec<(PortDesc, PortStats)> {
        let secs = self.started.elapsed().as_secs() as u32;
        self.slots
            .ports()
            .map(|st| {
                let up = match &st.io {
                    PortIo::Eth(p) => p.link().is_ok_and(|l| l.up),
                    PortIo::Vhost { dev, .. } => dev.is_some(),
                    PortIo::Vxlan(_) => true,
                };
                let no = u32::from(port_no(st.slot));
                // A stable, locally administered address per port number.
                let hw_addr = [0x02, 0x00, 0x00, 0x00, (no >> 8) as u8, no as u8];
                let desc = PortDesc { port_no: no, hw_addr, name: st.cfg.name.clone(), config: 0, state: if up { LIVE } else { LINK_DOWN } };
                let t = self.port_totals(st.slot).since(&self.slots[st.slot].base);
                let (rx_dropped, tx_dropped) = DropReason::ALL.iter().fold((0, 0), |(rx, tx), &r| if r.is_rx_side() { (rx + t.drop(r), tx) } else { (rx, tx + t.drop(r)) });
                let stats = PortStats {
                    port_no: no,
                    rx_packets: t.rx_packets,
                    tx_packets: t.tx_packets,
                    rx_bytes: t.rx_bytes,
                    tx_bytes: t.tx_bytes,
                    rx_dropped,
                    tx_dropped,
                    duration_sec: secs,
                };
                (desc, stats)
            })
            .collect()
    }

    fn install_flows(&mut self, table: Option<Arc<FlowTable>>) -> Result<(), String> {
        if let Some(old) = std::mem::replace(&mut self.openflow.table, table) {
            self.openflow.misses_base += old.misses.load(Relaxed);
        }
        self.replan()
    }

    fn packet_out(&mut self, in_slot: u16, actions: &[Action], data: &[u8]) -> Result<(), String> {
        if self.openflow.table.is_none() {
            return Err("no flow table in the plans".into());
        }
        if !flow::push_inject(&self.openflow.inject, in_slot, actions, data) {
            return Err("the PACKET_OUT ring is full".into());
        }
        Ok(())
    }

    fn packet_ins(&mut self, f: &mut dyn FnMut(PacketIn)) {
        let of = &mut self.openflow;
        for ring in &of.packet_in {
            flow::drain_packet_in(ring, &mut of.scratch, &mut *f);
        }
    }

    fn packet_in_dropped(&self) -> u64 {
        self.openflow.packet_in.iter().map(|r| r.dropped.load(Relaxed)).sum()
    }

    fn table_misses(&self) -> u64 {
        self.openflow.misses_base + self.openflow.table.as_ref().map_or(0, |t| t.misses.load(Relaxed))
    }
}
