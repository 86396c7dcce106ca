//! The agent against a data path of its own and connections played by
//! hand: what each request gets back, what reaches the data path.
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use dataplane::flow::{Action, FlowKey, Match, Reason};

use super::*;
use crate::openflow::msg::{ty, FlowCommand, FlowFilter, FlowMod, MpReply};
use crate::openflow::read_message;

#[derive(Default)]
struct FakeDp {
    ports: Vec<u16>,
    tables: Vec<Option<Arc<FlowTable>>>,
    outs: Vec<(u16, Vec<Action>, Vec<u8>)>,
    ins: Vec<(u16, Vec<u8>)>,
}

impl Datapath for FakeDp {
    fn of_ports(&self) -> Vec<(PortDesc, PortStats)> {
        self.ports
            .iter()
            .map(|&n| (PortDesc { port_no: n.into(), name: format!("p{n}"), ..PortDesc::default() }, PortStats { port_no: n.into(), ..PortStats::default() }))
            .collect()
    }
    fn install_flows(&mut self, table: Option<Arc<FlowTable>>) -> Result<(), String> {
        self.tables.push(table);
        Ok(())
    }
    fn packet_out(&mut self, in_slot: u16, actions: &[Action], data: &[u8]) -> Result<(), String> {
        self.outs.push((in_slot, actions.to_vec(), data.to_vec()));
        Ok(())
    }
    fn packet_ins(&mut self, f: &mut dyn FnMut(DpPacketIn)) {
        for (port, data) in self.ins.drain(..) {
            f(DpPacketIn { in_port: port, reason: Reason::NoMatch, cookie: 7, total_len: data.len(), data: &data });
        }
    }
    fn packet_in_dropped(&self) -> u64 {
        0
    }
    fn table_misses(&self) -> u64 {
        0
    }
}

/// A connection's written bytes, and whether the agent closed it.
#[derive(Clone, Default)]
struct Wire(Arc<Mutex<(Vec<u8>, bool)>>);

impl std::io::Write for Wire {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Peer for Wire {
    fn close(&mut self) {
        self.0.lock().unwrap().1 = true;
    }
}

impl Wire {
    /// Every message written since the last call.
    fn take(&self) -> Vec<(Header, Msg)> {
        let bytes = std::mem::take(&mut self.0.lock().unwrap().0);
        let mut r = &bytes[..];
        let mut out = Vec::new();
        while !r.is_empty() {
            let (h, body) = read_message(&mut r).unwrap();
            out.push((h, decode(h.kind, &body).unwrap()));
        }
        out
    }
}

struct Bench {
    agent: Agent,
    dp: FakeDp,
    tx: Sender<Event>,
}

impl Bench {
    fn new() -> Bench {
        let (tx, rx) = channel();
        Bench { agent: Agent::new(rx), dp: FakeDp { ports: vec![1, 2], ..FakeDp::default() }, tx }
    }

    fn connect(&mut self, id: ConnId, controller: bool) -> Wire {
        let w = Wire::default();
        self.tx.send(Event::Up { id, writer: Box::new(w.clone()), peer: format!("test{id}"), controller }).unwrap();
        self.agent.poll(&mut self.dp);
        assert!(matches!(w.take()[..], [(_, Msg::Hello { bitmap: 16 })]));
        w
    }

    fn send_raw(&mut self, id: ConnId, bytes: Vec<u8>) {
        let (header, body) = read_message(&mut &bytes[..]).unwrap();
        self.tx.send(Event::Message { id, header, body }).unwrap();
        self.agent.poll(&mut self.dp);
    }

    fn send(&mut self, id: ConnId, m: &Msg, xid: u32) {
        self.send_raw(id, encode(m, xid));
    }
}

fn add(m: Match, priority: u16, actions: Vec<Action>) -> Msg {
    Msg::FlowMod(FlowMod { command: FlowCommand::Add, matches: m, priority, actions, buffer_id: NO_BUFFER, ..FlowMod::default() })
}

#[test]
fn hello_of_another_version_is_refused_and_closed() {
    let mut b = Bench::new();
    let w = b.connect(1, false);
    b.send(1, &Msg::Hello { bitmap: 1 << 1 }, 5);
    let got = w.take();
    assert!(matches!(&got[..], [(h, Msg::Error { kind: 0, code: 0, .. })] if h.xid == 5), "{got:?}");
    assert!(w.0.lock().unwrap().1, "closed");
    // An OpenFlow 1.0 hello without a bitmap, likewise.
    let w = b.connect(2, false);
    let mut hello = encode(&Msg::Hello { bitmap: 0 }, 1);
    hello[0] = 1;
    b.send_raw(2, hello);
    assert!(matches!(w.take()[..], [(_, Msg::Error { kind: 0, .. })]));
}

#[test]
fn flow_mods_reach_the_data_path_before_the_barrier_is_answered() {
    let mut b = Bench::new();
    let w = b.connect(1, false);
    b.send(1, &Msg::Hello { bitmap: 1 << 4 }, 1);
    b.send(1, &add(Match { in_port: Some(1), ..Match::default() }, 10, vec![Action::Output(2)]), 2);
    b.send(1, &Msg::BarrierRequest, 3);
    assert!(matches!(w.take()[..], [(h, Msg::BarrierReply)] if h.xid == 3));
    let table = b.dp.tables.last().unwrap().clone().unwrap();
    assert!(table.lookup(&FlowKey::extract(&[0; 14], 1)).is_some());
    b.send(1, &Msg::MultipartRequest { flags: 0, body: MpRequest::Flow(FlowFilter { table_id: 0xff, out_port: 0xffff_ffff, ..FlowFilter::default() }) }, 4);
    let got = w.take();
    let [(_, Msg::MultipartReply { more: false, body: MpReply::Flow(flows) })] = &got[..] else { panic!("{got:?}") };
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].actions, [Action::Output(2)]);
    // Deleting every flow takes the table out of the plans.
    let del = Msg::FlowMod(FlowMod { command: FlowCommand::Delete, table_id: 0xff, out_port: 0xffff_ffff, out_group: 0xffff_ffff, ..FlowMod::default() });
    b.send(1, &del, 5);
    assert!(b.dp.tables.last().unwrap().is_none());
}

#[test]
fn bad_requests_get_errors_with_their_xid_and_the_connection_lives() {
    let mut b = Bench::new();
    let w = b.connect(1, false);
    // Unknown type, a GROUP_MOD, a flow mod into table 3, a truncated flow mod.
    let mut unknown = encode(&Msg::BarrierRequest, 9);
    unknown[1] = 77;
    b.send_raw(1, unknown);
    let mut group = encode(&Msg::BarrierRequest, 10);
    group[1] = 15;
    b.send_raw(1, group);
    let Msg::FlowMod(mut fm) = add(Match::default(), 1, vec![]) else { unreachable!() };
    fm.table_id = 3;
    b.send(1, &Msg::FlowMod(fm), 11);
    let mut short = encode(&add(Match::default(), 1, vec![Action::Normal]), 12);
    short.truncate(30);
    short[2..4].copy_from_slice(&30u16.to_be_bytes());
    b.send_raw(1, short);
    let got = w.take();
    let errs: Vec<(u32, u16, u16)> = got.iter().map(|(h, m)| match m {
        Msg::Error { kind, code, data } => {
            assert_eq!(data[..8].len(), 8, "the request's header comes back");
            (h.xid, *kind, *code)
        }
        m => panic!("{m:?}"),
    }).collect();
    assert_eq!(errs, [(9, 1, 1), (10, 1, 1), (11, 5, 2), (12, 1, 6)]);
    b.send(1, &Msg::EchoRequest(b"x".to_vec()), 13);
    assert!(matches!(&w.take()[..], [(h, Msg::EchoReply(d))] if h.xid == 13 && d == b"x"));
    assert!(!w.0.lock().unwrap().1);
}

#[test]
fn packet_ins_and_port_changes_go_to_the_controller_only() {
    let mut b = Bench::new();
    let tool = b.connect(1, false);
    let ctl = b.connect(2, true);
    b.dp.ins.push((1, vec![0xab; 60]));
    b.agent.poll(&mut b.dp);
    let got = ctl.take();
    assert!(matches!(&got[..], [(_, Msg::PacketIn(p))] if p.in_port == 1 && p.cookie == 7 && p.data.len() == 60 && p.reason == 0), "{got:?}");
    assert!(tool.take().is_empty());
    // A PACKET_OUT installs the (empty) table the injection path needs.
    let po = msg::PacketOut { buffer_id: NO_BUFFER, in_port: OFPP_CONTROLLER, actions: vec![Action::Output(2)], data: vec![1; 60] };
    b.send(2, &Msg::PacketOut(po), 3);
    assert!(b.dp.tables.last().unwrap().is_some());
    assert_eq!(b.dp.outs, [(FROM_CONTROLLER, vec![Action::Output(2)], vec![1; 60])]);
    let bad = msg::PacketOut { buffer_id: 5, in_port: 1, actions: vec![], data: vec![] };
    b.send(2, &Msg::PacketOut(bad), 4);
    assert!(matches!(ctl.take()[..], [(_, Msg::Error { kind: 1, code: 8, .. })]));
    // A port added and one deleted.
    std::thread::sleep(PORT_SCAN);
    b.agent.poll(&mut b.dp);
    ctl.take();
    b.dp.ports = vec![2, 3];
    std::thread::sleep(PORT_SCAN);
    b.agent.poll(&mut b.dp);
    let got: Vec<(u8, u32)> = ctl.take().into_iter().map(|(h, m)| match m {
        Msg::PortStatus { reason, port } if h.kind == ty::PORT_STATUS => (reason, port.port_no),
        m => panic!("{m:?}"),
    }).collect();
    assert_eq!(got, [(PORT_DELETE, 1), (PORT_ADD, 3)]);
    assert!(tool.take().is_empty());
}

/// A TSO segment sent to the controller whole made a PACKET_IN over 64 KiB,
/// which the encoder refuses: the control thread died.
#[test]
fn regression_a_packet_in_over_64k_is_cut() {
    let mut b = Bench::new();
    let ctl = b.connect(1, true);
    b.dp.ins.push((1, vec![0xcd; 65_600]));
    b.agent.poll(&mut b.dp);
    let got = ctl.take();
    assert!(matches!(&got[..], [(_, Msg::PacketIn(p))] if p.total_len == u16::MAX && p.data.len() == MAX_PACKET_IN_DATA));
}
