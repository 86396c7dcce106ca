//! The OpenFlow agent, on the control thread: answers every connection's
//! requests, keeps the flow table (`flows`) and hands the data path a new
//! snapshot after edits (before a BARRIER, a PACKET_OUT or any other
//! request is answered, so a reply never runs ahead of an edit), sends
//! the controller PACKET_INs, FLOW_REMOVEDs and PORT_STATUSes.
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::flow::{Action, FlowTable, PacketIn as DpPacketIn, FROM_CONTROLLER, MAX_INJECT_ACTIONS};

use super::action::OFPP_CONTROLLER;
use super::conn::{self, ConnId, Event, Peer};
use super::flows::{Flow, Flows, MAX_FLOWS, REMOVED_DELETE};
use super::msg::{self, FlowRemoved, Header, Msg, MpReply, MpRequest, PacketIn, PortDesc, PortStats, FLAG_SEND_FLOW_REM, NO_BUFFER, VERSION};
use super::multipart::{flow_size, split};
use super::wire::{err, OfError};
use super::{decode, encode};
use crate::protocol::{FlowInfo, FlowsInfo};

/// A PACKET_IN's frame at most: the whole message must stay under 64 KiB
/// (a TSO segment for the controller is cut here).
const MAX_PACKET_IN_DATA: usize = 65_000;
/// Messages taken per poll at most: the control loop has other work.
const PER_POLL: usize = 512;
const PORT_SCAN: Duration = Duration::from_millis(200);
const EXPIRE_SCAN: Duration = Duration::from_millis(500);
/// OFPC_FLOW_STATS | OFPC_TABLE_STATS | OFPC_PORT_STATS.
const CAPABILITIES: u32 = 0x7;
const PORT_ADD: u8 = 0;
const PORT_DELETE: u8 = 1;
const PORT_MODIFY: u8 = 2;

/// What the agent needs of the switch.
pub trait Datapath {
    /// Every port: its description and counters.
    fn of_ports(&self) -> Vec<(PortDesc, PortStats)>;
    /// Puts `table` (None: no flows) into the PMD threads' plans.
    fn install_flows(&mut self, table: Option<Arc<FlowTable>>) -> Result<(), String>;
    /// Sends `data` with `actions` from `in_slot` (or `FROM_CONTROLLER`).
    fn packet_out(&mut self, in_slot: u16, actions: &[Action], data: &[u8]) -> Result<(), String>;
    /// Every frame the PMD threads wrote for the controller.
    fn packet_ins(&mut self, f: &mut dyn FnMut(DpPacketIn));
    /// Frames for the controller dropped (a ring full).
    fn packet_in_dropped(&self) -> u64;
    /// Packets that matched no flow (while there were flows).
    fn table_misses(&self) -> u64;
}

struct Conn {
    w: Box<dyn Peer>,
    peer: String,
    controller: bool,
}

pub struct Agent {
    events: Receiver<Event>,
    conns: BTreeMap<ConnId, Conn>,
    flows: Flows,
    /// The table changed since the data path last got it.
    dirty: bool,
    /// A PACKET_OUT needs the injection path, which comes with a table.
    want_table: bool,
    installed: bool,
    miss_send_len: u16,
    /// The ports at the last scan (None before the first).
    ports: Option<BTreeMap<u32, PortDesc>>,
    last_ports: Instant,
    last_expire: Instant,
    packet_ins: u64,
    dpid: u64,
}

impl Agent {
    /// Serves the management socket `socket`; connects to `controller`.
    pub fn start(socket: &std::path::Path, controller: Option<&str>) -> Result<Agent, String> {
        let (tx, events) = channel();
        conn::listen(socket, tx.clone())?;
        if let Some(c) = controller {
            conn::connect(conn::parse_target(c)?, tx.clone())?;
        }
        Ok(Agent::new(events))
    }

    fn new(events: Receiver<Event>) -> Agent {
        let now = Instant::now();
        Agent {
            events,
            conns: BTreeMap::new(),
            flows: Flows::default(),
            dirty: false,
            want_table: false,
            installed: false,
            miss_send_len: 128,
            ports: None,
            last_ports: now,
            last_expire: now,
            packet_ins: 0,
            dpid: 1,
        }
    }

    /// One round: requests, then the data path's frames for the controller,
    /// then timeouts and port changes when due.
    pub fn poll(&mut self, dp: &mut dyn Datapath) {
        for _ in 0..PER_POLL {
            let Ok(ev) = self.events.try_recv() else { break };
            match ev {
                Event::Up { id, writer, peer, controller } => {
                    self.conns.insert(id, Conn { w: writer, peer, controller });
                    self.send(id, &Msg::Hello { bitmap: 1 << VERSION }, 0);
                    if controller {
                        eprintln!("vswitchd: OpenFlow controller connected ({})", self.conns[&id].peer);
                    }
                }
                Event::Message { id, header, body } => self.on_message(dp, id, header, &body),
                Event::Down { id } => {
                    if self.conns.remove(&id).is_some_and(|c| c.controller) {
                        eprintln!("vswitchd: OpenFlow controller disconnected");
                    }
                }
            }
        }
        self.sync(dp);
        let mut ins = Vec::new();
        dp.packet_ins(&mut |p| {
            let data = p.data[..p.data.len().min(MAX_PACKET_IN_DATA)].to_vec();
            let total_len = p.total_len.min(u16::MAX.into()) as u16;
            ins.push(PacketIn { total_len, reason: p.reason as u8, table_id: 0, cookie: p.cookie, in_port: p.in_port, data })
        });
        for p in ins {
            self.packet_ins += 1;
            self.async_msg(&Msg::PacketIn(p));
        }
        let now = Instant::now();
        if now.duration_since(self.last_expire) >= EXPIRE_SCAN {
            self.last_expire = now;
            let gone = self.flows.expire(now);
            if !gone.is_empty() {
                self.dirty = true;
                for (f, why) in gone {
                    self.removed(&f, why, now);
                }
                self.sync(dp);
            }
        }
        if now.duration_since(self.last_ports) >= PORT_SCAN {
            self.last_ports = now;
            self.scan_ports(dp);
        }
    }

    /// Gives the data path the table if it changed.
    fn sync(&mut self, dp: &mut dyn Datapath) {
        let want = !self.flows.is_empty() || self.want_table;
        if !self.dirty && want == self.installed {
            return;
        }
        let table = self.flows.snapshot().or_else(|| self.want_table.then(|| Arc::new(FlowTable::default())));
        self.installed = table.is_some();
        match dp.install_flows(table) {
            Ok(()) => self.dirty = false,
            Err(e) => eprintln!("vswitchd: OpenFlow: flows not installed: {e}"),
        }
    }

    fn send(&mut self, id: ConnId, m: &Msg, xid: u32) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.w.write_all(&encode(m, xid)).is_err() {
            // It stopped reading: its reader thread reports it down.
            c.w.close();
            self.conns.remove(&id);
        }
    }

    fn async_msg(&mut self, m: &Msg) {
        let ids: Vec<ConnId> = self.conns.iter().filter(|(_, c)| c.controller).map(|(&id, _)| id).collect();
        for id in ids {
            self.send(id, m, 0);
        }
    }

    fn error(&mut self, id: ConnId, e: OfError, header: &Header, body: &[u8]) {
        // The offending message's first 64 bytes, as OpenFlow asks.
        let mut data = encode(&Msg::BarrierRequest, header.xid);
        data[..4].copy_from_slice(&[header.version, header.kind, (header.length >> 8) as u8, header.length as u8]);
        data.extend_from_slice(&body[..body.len().min(56)]);
        self.send(id, &Msg::Error { kind: e.kind, code: e.code, data }, header.xid);
    }

    fn removed(&mut self, f: &Flow, reason: u8, now: Instant) {
        if f.flags & FLAG_SEND_FLOW_REM != 0 {
            self.async_msg(&Msg::FlowRemoved(FlowRemoved { reason, table_id: 0, stat: f.stat(now) }));
        }
    }

    fn on_message(&mut self, dp: &mut dyn Datapath, id: ConnId, h: Header, body: &[u8]) {
        if h.version != VERSION && h.kind != msg::ty::HELLO {
            return self.error(id, err::BAD_VERSION, &h, body);
        }
        let m = match decode(h.kind, body) {
            Ok(m) => m,
            Err(e) => return self.error(id, e, &h, body),
        };
        if !matches!(m, Msg::FlowMod(_)) {
            self.sync(dp);
        }
        let xid = h.xid;
        match m {
            Msg::Hello { bitmap } => {
                let ok = if bitmap != 0 { bitmap & 1 << VERSION != 0 } else { h.version >= VERSION };
                if !ok {
                    let why = b"this switch speaks OpenFlow 1.3 (0x04) only".to_vec();
                    self.send(id, &Msg::Error { kind: err::HELLO_INCOMPATIBLE.kind, code: err::HELLO_INCOMPATIBLE.code, data: why }, xid);
                    if let Some(mut c) = self.conns.remove(&id) {
                        c.w.close();
                    }
                }
            }
            Msg::EchoRequest(d) => self.send(id, &Msg::EchoReply(d), xid),
            Msg::EchoReply(_) => {}
            Msg::Error { kind, code, .. } => eprintln!("vswitchd: OpenFlow peer sent an error (type {kind}, code {code})"),
            Msg::FeaturesRequest => self.send(id, &Msg::FeaturesReply { dpid: self.dpid, n_buffers: 0, n_tables: 1, capabilities: CAPABILITIES }, xid),
            Msg::GetConfigRequest => self.send(id, &Msg::GetConfigReply { flags: 0, miss_send_len: self.miss_send_len }, xid),
            Msg::SetConfig { miss_send_len, .. } => self.miss_send_len = miss_send_len,
            Msg::FlowMod(fm) => match self.flows.apply(&fm, Instant::now()) {
                Ok(gone) => {
                    self.dirty = true;
                    let now = Instant::now();
                    for f in gone {
                        self.removed(&f, REMOVED_DELETE, now);
                    }
                }
                Err(e) => self.error(id, e, &h, body),
            },
            Msg::PacketOut(po) => {
                if let Err(e) = self.packet_out(dp, &po) {
                    self.error(id, e, &h, body);
                }
            }
            Msg::MultipartRequest { body: req, .. } => {
                for r in self.multipart(dp, &req) {
                    self.send(id, &r, xid);
                }
            }
            Msg::BarrierRequest => self.send(id, &Msg::BarrierReply, xid),
            // Replies and asynchronous messages are the switch's to send.
            _ => self.error(id, err::BAD_TYPE, &h, body),
        }
    }

    fn packet_out(&mut self, dp: &mut dyn Datapath, po: &msg::PacketOut) -> Result<(), OfError> {
        if po.buffer_id != NO_BUFFER {
            return Err(err::BUFFER_UNKNOWN);
        }
        if po.actions.len() > MAX_INJECT_ACTIONS {
            return Err(err::TOO_MANY_ACTIONS);
        }
        let in_slot = match po.in_port {
            OFPP_CONTROLLER => FROM_CONTROLLER,
            p @ 1..=64 => p as u16 - 1,
            _ => return Err(err::BAD_PORT),
        };
        if !self.want_table {
            self.want_table = true;
            self.sync(dp);
        }
        dp.packet_out(in_slot, &po.actions, &po.data).map_err(|e| {
            eprintln!("vswitchd: OpenFlow: PACKET_OUT dropped: {e}");
            err::BAD_ARGUMENT
        })
    }

    fn multipart(&self, dp: &dyn Datapath, req: &MpRequest) -> Vec<Msg> {
        let now = Instant::now();
        let one = |body| vec![Msg::MultipartReply { more: false, body }];
        match req {
            MpRequest::Desc => one(MpReply::Desc {
                mfr: "vswitch".into(),
                hw: "DPDK userspace switch".into(),
                sw: env!("CARGO_PKG_VERSION").into(),
                serial: "none".into(),
                dp: "br0".into(),
            }),
            MpRequest::Flow(q) => {
                let stats: Vec<_> = self.flows.select(q).map(|f| f.stat(now)).collect();
                split(&stats, flow_size, MpReply::Flow)
            }
            MpRequest::Aggregate(q) => {
                let (mut packets, mut bytes, mut flows) = (0, 0, 0);
                for s in self.flows.select(q).map(|f| f.stat(now)) {
                    (packets, bytes, flows) = (packets + s.packets, bytes + s.bytes, flows + 1);
                }
                one(MpReply::Aggregate { packets, bytes, flows })
            }
            MpRequest::Table => {
                let (active, matched, lookups) = self.table_counts(dp);
                one(MpReply::Table { active, lookups, matched })
            }
            MpRequest::PortStats { port_no } => {
                let stats: Vec<_> = dp.of_ports().into_iter().map(|(_, s)| s).filter(|s| *port_no == super::action::OFPP_ANY || s.port_no == *port_no).collect();
                split(&stats, |_| 112, MpReply::PortStats)
            }
            MpRequest::TableFeatures => one(MpReply::TableFeatures { name: "classifier".into(), max_entries: MAX_FLOWS as u32 }),
            MpRequest::PortDesc => {
                let ports: Vec<_> = dp.of_ports().into_iter().map(|(d, _)| d).collect();
                split(&ports, |_| 64, MpReply::PortDesc)
            }
        }
    }

    /// Flows, packets that hit one, and packets looked up (the data path
    /// counts misses only while it has a table).
    fn table_counts(&self, dp: &dyn Datapath) -> (u32, u64, u64) {
        let now = Instant::now();
        let matched: u64 = self.flows.iter().map(|f| f.stat(now).packets).sum();
        (self.flows.len() as u32, matched, matched + dp.table_misses())
    }

    /// PORT_STATUS for each port added, deleted or changed since the last scan.
    fn scan_ports(&mut self, dp: &dyn Datapath) {
        let now: BTreeMap<u32, PortDesc> = dp.of_ports().into_iter().map(|(d, _)| (d.port_no, d)).collect();
        // The first scan only learns what is there.
        let Some(before) = self.ports.replace(now.clone()) else { return };
        let mut changes = Vec::new();
        for (no, old) in &before {
            match now.get(no) {
                None => changes.push((PORT_DELETE, old.clone())),
                Some(new) if new.name != old.name => {
                    changes.push((PORT_DELETE, old.clone()));
                    changes.push((PORT_ADD, new.clone()));
                }
                Some(new) if new != old => changes.push((PORT_MODIFY, new.clone())),
                Some(_) => {}
            }
        }
        changes.extend(now.into_iter().filter(|(no, _)| !before.contains_key(no)).map(|(_, d)| (PORT_ADD, d)));
        for (reason, port) in changes {
            self.async_msg(&Msg::PortStatus { reason, port });
        }
    }

    /// `vswitchctl show flows`.
    pub fn show(&self, dp: &dyn Datapath) -> FlowsInfo {
        let now = Instant::now();
        let mut flows: Vec<FlowInfo> = self
            .flows
            .iter()
            .map(|f| {
                let s = f.stat(now);
                FlowInfo {
                    priority: s.priority,
                    cookie: s.cookie,
                    matches: super::show::fmt_match(&s.matches),
                    actions: super::show::fmt_actions(&s.actions),
                    packets: s.packets,
                    bytes: s.bytes,
                    duration_secs: s.duration.0,
                    idle_timeout: s.idle_timeout,
                    hard_timeout: s.hard_timeout,
                }
            })
            .collect();
        flows.sort_by_key(|f| std::cmp::Reverse(f.priority));
        FlowsInfo {
            flows,
            controllers: self.conns.values().filter(|c| c.controller).map(|c| c.peer.clone()).collect(),
            packet_ins: self.packet_ins,
            packet_in_dropped: dp.packet_in_dropped(),
        }
    }
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
