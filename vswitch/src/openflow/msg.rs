//! OpenFlow 1.3 messages: the header, and each message the switch takes
//! or sends, to and from bytes. `decode` never trusts a length: a body
//! shorter than its structure, or an inner length past its end, is an
//! `OfError` to answer with, never a panic.
use dataplane::flow::{Action, Match};

use super::action::{read_actions, read_instructions, write_actions, write_instructions};
use super::oxm::{read_match, write_match};
use super::wire::{err, Reader, Res, Writer};

pub const VERSION: u8 = 4;
pub const HEADER: usize = 8;
pub const NO_BUFFER: u32 = 0xffff_ffff;

pub mod ty {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const FEATURES_REQUEST: u8 = 5;
    pub const FEATURES_REPLY: u8 = 6;
    pub const GET_CONFIG_REQUEST: u8 = 7;
    pub const GET_CONFIG_REPLY: u8 = 8;
    pub const SET_CONFIG: u8 = 9;
    pub const PACKET_IN: u8 = 10;
    pub const FLOW_REMOVED: u8 = 11;
    pub const PORT_STATUS: u8 = 12;
    pub const PACKET_OUT: u8 = 13;
    pub const FLOW_MOD: u8 = 14;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
}

/// Multipart types the switch answers.
pub mod mp {
    pub const DESC: u16 = 0;
    pub const FLOW: u16 = 1;
    pub const AGGREGATE: u16 = 2;
    pub const TABLE: u16 = 3;
    pub const PORT_STATS: u16 = 4;
    pub const TABLE_FEATURES: u16 = 12;
    pub const PORT_DESC: u16 = 13;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub kind: u8,
    pub length: u16,
    pub xid: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER]) -> Header {
        Header { version: b[0], kind: b[1], length: u16::from_be_bytes([b[2], b[3]]), xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]) }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowCommand {
    #[default]
    Add,
    Modify,
    ModifyStrict,
    Delete,
    DeleteStrict,
}

pub const FLAG_SEND_FLOW_REM: u16 = 1;
pub const FLAG_CHECK_OVERLAP: u16 = 2;
pub const FLAG_RESET_COUNTS: u16 = 4;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowMod {
    pub cookie: u64,
    pub cookie_mask: u64,
    pub table_id: u8,
    pub command: FlowCommand,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub buffer_id: u32,
    pub out_port: u32,
    pub out_group: u32,
    pub flags: u16,
    pub matches: Match,
    pub actions: Vec<Action>,
}

/// The flows a FLOW or AGGREGATE request asks about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub table_id: u8,
    pub out_port: u32,
    pub cookie: u64,
    pub cookie_mask: u64,
    pub matches: Match,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MpRequest {
    Desc,
    Flow(FlowFilter),
    Aggregate(FlowFilter),
    Table,
    PortStats { port_no: u32 },
    /// A query only (a body that sets features is refused).
    TableFeatures,
    PortDesc,
}

/// One flow in a FLOW reply (or a FLOW_REMOVED).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStat {
    pub duration: (u32, u32),
    pub priority: u16,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub flags: u16,
    pub cookie: u64,
    pub packets: u64,
    pub bytes: u64,
    pub matches: Match,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortDesc {
    pub port_no: u32,
    pub hw_addr: [u8; 6],
    pub name: String,
    pub config: u32,
    pub state: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub port_no: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub duration_sec: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MpReply {
    Desc { mfr: String, hw: String, sw: String, serial: String, dp: String },
    Flow(Vec<FlowStat>),
    Aggregate { packets: u64, bytes: u64, flows: u32 },
    /// Table 0: active flows, lookups, matches.
    Table { active: u32, lookups: u64, matched: u64 },
    PortStats(Vec<PortStats>),
    /// Table 0's name and size, with no properties (OVS reads them as
    /// optional).
    TableFeatures { name: String, max_entries: u32 },
    PortDesc(Vec<PortDesc>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketIn {
    pub total_len: u16,
    pub reason: u8,
    pub table_id: u8,
    pub cookie: u64,
    pub in_port: u16,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketOut {
    pub buffer_id: u32,
    pub in_port: u32,
    pub actions: Vec<Action>,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRemoved {
    pub reason: u8,
    pub table_id: u8,
    pub stat: FlowStat,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// The versions bitmap of its element (0: none sent).
    Hello { bitmap: u32 },
    Error { kind: u16, code: u16, data: Vec<u8> },
    EchoRequest(Vec<u8>),
    EchoReply(Vec<u8>),
    FeaturesRequest,
    FeaturesReply { dpid: u64, n_buffers: u32, n_tables: u8, capabilities: u32 },
    GetConfigRequest,
    GetConfigReply { flags: u16, miss_send_len: u16 },
    SetConfig { flags: u16, miss_send_len: u16 },
    PacketIn(PacketIn),
    FlowRemoved(FlowRemoved),
    PortStatus { reason: u8, port: PortDesc },
    PacketOut(PacketOut),
    FlowMod(FlowMod),
    MultipartRequest { flags: u16, body: MpRequest },
    /// `more`: another reply of the same request follows.
    MultipartReply { more: bool, body: MpReply },
    BarrierRequest,
    BarrierReply,
}

const HELLO_ELEM_VERSIONBITMAP: u16 = 1;

/// A message of type `kind` whose body is `body` (after the header).
pub fn decode(kind: u8, body: &[u8]) -> Res<Msg> {
    let mut r = Reader::new(body);
    let empty = |r: &Reader, m: Msg| if r.is_empty() { Ok(m) } else { Err(err::BAD_LEN) };
    Ok(match kind {
        ty::HELLO => {
            // Elements other than the bitmap are skipped (OpenFlow says so).
            let mut bitmap = 0;
            while r.len() >= 4 {
                let t = r.u16()?;
                let len = r.u16()? as usize;
                if len < 4 {
                    return Err(err::BAD_LEN);
                }
                let mut e = r.sub(len - 4)?;
                r.skip((len.div_ceil(8) * 8 - len).min(r.len()))?;
                if t == HELLO_ELEM_VERSIONBITMAP {
                    bitmap = e.u32()?;
                }
            }
            Msg::Hello { bitmap }
        }
        ty::ERROR => Msg::Error { kind: r.u16()?, code: r.u16()?, data: r.rest().to_vec() },
        ty::ECHO_REQUEST => Msg::EchoRequest(body.to_vec()),
        ty::ECHO_REPLY => Msg::EchoReply(body.to_vec()),
        ty::FEATURES_REQUEST => empty(&r, Msg::FeaturesRequest)?,
        ty::FEATURES_REPLY => {
            let (dpid, n_buffers, n_tables) = (r.u64()?, r.u32()?, r.u8()?);
            r.skip(3)?;
            Msg::FeaturesReply { dpid, n_buffers, n_tables, capabilities: r.u32()? }
        }
        ty::GET_CONFIG_REQUEST => empty(&r, Msg::GetConfigRequest)?,
        ty::GET_CONFIG_REPLY => Msg::GetConfigReply { flags: r.u16()?, miss_send_len: r.u16()? },
        ty::SET_CONFIG => Msg::SetConfig { flags: r.u16()?, miss_send_len: r.u16()? },
        ty::PACKET_IN => {
            r.u32()?;
            let (total_len, reason, table_id, cookie) = (r.u16()?, r.u8()?, r.u8()?, r.u64()?);
            let m = read_match(&mut r)?;
            r.skip(2)?;
            Msg::PacketIn(PacketIn { total_len, reason, table_id, cookie, in_port: m.in_port.unwrap_or(0), data: r.rest().to_vec() })
        }
        ty::FLOW_REMOVED => {
            let cookie = r.u64()?;
            let priority = r.u16()?;
            let (reason, table_id) = (r.u8()?, r.u8()?);
            let duration = (r.u32()?, r.u32()?);
            let (idle_timeout, hard_timeout, packets, bytes) = (r.u16()?, r.u16()?, r.u64()?, r.u64()?);
            let matches = read_match(&mut r)?;
            let stat = FlowStat { duration, priority, idle_timeout, hard_timeout, cookie, packets, bytes, matches, ..FlowStat::default() };
            Msg::FlowRemoved(FlowRemoved { reason, table_id, stat })
        }
        ty::PORT_STATUS => {
            let reason = r.u8()?;
            r.skip(7)?;
            Msg::PortStatus { reason, port: read_port(&mut r)? }
        }
        ty::PACKET_OUT => {
            let (buffer_id, in_port, actions_len) = (r.u32()?, r.u32()?, r.u16()? as usize);
            r.skip(6)?;
            let actions = read_actions(&mut r.sub(actions_len)?)?;
            Msg::PacketOut(PacketOut { buffer_id, in_port, actions, data: r.rest().to_vec() })
        }
        ty::FLOW_MOD => Msg::FlowMod(flow_mod(&mut r)?),
        ty::MULTIPART_REQUEST => {
            let (kind, flags) = (r.u16()?, r.u16()?);
            r.skip(4)?;
            let body = match kind {
                mp::DESC => MpRequest::Desc,
                mp::FLOW => MpRequest::Flow(flow_filter(&mut r)?),
                mp::AGGREGATE => MpRequest::Aggregate(flow_filter(&mut r)?),
                mp::TABLE => MpRequest::Table,
                mp::PORT_STATS => MpRequest::PortStats { port_no: r.u32()? },
                mp::PORT_DESC => MpRequest::PortDesc,
                mp::TABLE_FEATURES if r.is_empty() => MpRequest::TableFeatures,
                mp::TABLE_FEATURES => return Err(err::TABLE_FEATURES_EPERM),
                _ => return Err(err::BAD_MULTIPART),
            };
            Msg::MultipartRequest { flags, body }
        }
        ty::MULTIPART_REPLY => super::multipart::decode_reply(&mut r)?,
        ty::BARRIER_REQUEST => empty(&r, Msg::BarrierRequest)?,
        ty::BARRIER_REPLY => empty(&r, Msg::BarrierReply)?,
        _ => return Err(err::BAD_TYPE),
    })
}

fn flow_mod(r: &mut Reader) -> Res<FlowMod> {
    let (cookie, cookie_mask, table_id) = (r.u64()?, r.u64()?, r.u8()?);
    let command = match r.u8()? {
        0 => FlowCommand::Add,
        1 => FlowCommand::Modify,
        2 => FlowCommand::ModifyStrict,
        3 => FlowCommand::Delete,
        4 => FlowCommand::DeleteStrict,
        _ => return Err(err::BAD_COMMAND),
    };
    let (idle_timeout, hard_timeout, priority) = (r.u16()?, r.u16()?, r.u16()?);
    let (buffer_id, out_port, out_group, flags) = (r.u32()?, r.u32()?, r.u32()?, r.u16()?);
    r.skip(2)?;
    let matches = read_match(r)?;
    let actions = read_instructions(r)?;
    Ok(FlowMod { cookie, cookie_mask, table_id, command, idle_timeout, hard_timeout, priority, buffer_id, out_port, out_group, flags, matches, actions })
}

fn flow_filter(r: &mut Reader) -> Res<FlowFilter> {
    let table_id = r.u8()?;
    r.skip(3)?;
    let out_port = r.u32()?;
    r.skip(8)?;
    let (cookie, cookie_mask) = (r.u64()?, r.u64()?);
    Ok(FlowFilter { table_id, out_port, cookie, cookie_mask, matches: read_match(r)? })
}

pub fn read_port(r: &mut Reader) -> Res<PortDesc> {
    let port_no = r.u32()?;
    r.skip(4)?;
    let hw_addr = r.array()?;
    r.skip(2)?;
    let name = r.bytes(16)?;
    let name = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(16)]).into_owned();
    let (config, state) = (r.u32()?, r.u32()?);
    r.skip(24)?;
    Ok(PortDesc { port_no, hw_addr, name, config, state })
}

pub fn write_port(w: &mut Writer, p: &PortDesc) {
    // 10 Gb/s full duplex, copper, as OVS reports a virtual port.
    const CURR: u32 = 1 << 6 | 1 << 11;
    w.u32(p.port_no).zeros(4).bytes(&p.hw_addr).zeros(2).text(&p.name, 16).u32(p.config).u32(p.state);
    w.u32(CURR).u32(0).u32(0).u32(0).u32(10_000_000).u32(10_000_000);
}

fn write_flow_mod(w: &mut Writer, f: &FlowMod) {
    let cmd = f.command as u8;
    w.u64(f.cookie).u64(f.cookie_mask).u8(f.table_id).u8(cmd).u16(f.idle_timeout).u16(f.hard_timeout).u16(f.priority);
    w.u32(f.buffer_id).u32(f.out_port).u32(f.out_group).u16(f.flags).zeros(2);
    write_match(w, &f.matches);
    write_instructions(w, &f.actions);
}

fn write_filter(w: &mut Writer, f: &FlowFilter) {
    w.u8(f.table_id).zeros(3).u32(f.out_port).u32(0xffff_ffff).zeros(4).u64(f.cookie).u64(f.cookie_mask);
    write_match(w, &f.matches);
}

/// `m` as a whole message with `xid`. A body over 64 KiB cannot be sent:
/// multipart replies are cut before that (`multipart`).
pub fn encode(m: &Msg, xid: u32) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(VERSION).u8(kind(m)).u16(0).u32(xid);
    match m {
        Msg::Hello { bitmap } => {
            if *bitmap != 0 {
                w.u16(HELLO_ELEM_VERSIONBITMAP).u16(8).u32(*bitmap);
            }
        }
        Msg::Error { kind, code, data } => {
            w.u16(*kind).u16(*code).bytes(data);
        }
        Msg::EchoRequest(d) | Msg::EchoReply(d) => {
            w.bytes(d);
        }
        Msg::FeaturesRequest | Msg::GetConfigRequest | Msg::BarrierRequest | Msg::BarrierReply => {}
        Msg::FeaturesReply { dpid, n_buffers, n_tables, capabilities } => {
            w.u64(*dpid).u32(*n_buffers).u8(*n_tables).zeros(3).u32(*capabilities).u32(0);
        }
        Msg::GetConfigReply { flags, miss_send_len } | Msg::SetConfig { flags, miss_send_len } => {
            w.u16(*flags).u16(*miss_send_len);
        }
        Msg::PacketIn(p) => {
            w.u32(NO_BUFFER).u16(p.total_len).u8(p.reason).u8(p.table_id).u64(p.cookie);
            write_match(&mut w, &Match { in_port: Some(p.in_port), ..Match::default() });
            w.zeros(2).bytes(&p.data);
        }
        Msg::FlowRemoved(f) => {
            let s = &f.stat;
            w.u64(s.cookie).u16(s.priority).u8(f.reason).u8(f.table_id).u32(s.duration.0).u32(s.duration.1);
            w.u16(s.idle_timeout).u16(s.hard_timeout).u64(s.packets).u64(s.bytes);
            write_match(&mut w, &s.matches);
        }
        Msg::PortStatus { reason, port } => {
            w.u8(*reason).zeros(7);
            write_port(&mut w, port);
        }
        Msg::PacketOut(p) => {
            w.u32(p.buffer_id).u32(p.in_port).u16(0).zeros(6);
            let start = w.len();
            write_actions(&mut w, &p.actions);
            let len = w.len() - start;
            w.patch_u16(start - 8, len as u16);
            w.bytes(&p.data);
        }
        Msg::FlowMod(f) => write_flow_mod(&mut w, f),
        Msg::MultipartRequest { flags, body } => {
            let kind = match body {
                MpRequest::Desc => mp::DESC,
                MpRequest::Flow(_) => mp::FLOW,
                MpRequest::Aggregate(_) => mp::AGGREGATE,
                MpRequest::Table => mp::TABLE,
                MpRequest::PortStats { .. } => mp::PORT_STATS,
                MpRequest::TableFeatures => mp::TABLE_FEATURES,
                MpRequest::PortDesc => mp::PORT_DESC,
            };
            w.u16(kind).u16(*flags).zeros(4);
            match body {
                MpRequest::Flow(f) | MpRequest::Aggregate(f) => write_filter(&mut w, f),
                MpRequest::PortStats { port_no } => {
                    w.u32(*port_no).zeros(4);
                }
                _ => {}
            }
        }
        Msg::MultipartReply { more, body } => super::multipart::encode_reply(&mut w, *more, body),
    }
    let len = u16::try_from(w.len()).expect("messages are cut below 64 KiB");
    w.patch_u16(2, len);
    w.0
}

fn kind(m: &Msg) -> u8 {
    match m {
        Msg::Hello { .. } => ty::HELLO,
        Msg::Error { .. } => ty::ERROR,
        Msg::EchoRequest(_) => ty::ECHO_REQUEST,
        Msg::EchoReply(_) => ty::ECHO_REPLY,
        Msg::FeaturesRequest => ty::FEATURES_REQUEST,
        Msg::FeaturesReply { .. } => ty::FEATURES_REPLY,
        Msg::GetConfigRequest => ty::GET_CONFIG_REQUEST,
        Msg::GetConfigReply { .. } => ty::GET_CONFIG_REPLY,
        Msg::SetConfig { .. } => ty::SET_CONFIG,
        Msg::PacketIn(_) => ty::PACKET_IN,
        Msg::FlowRemoved(_) => ty::FLOW_REMOVED,
        Msg::PortStatus { .. } => ty::PORT_STATUS,
        Msg::PacketOut(_) => ty::PACKET_OUT,
        Msg::FlowMod(_) => ty::FLOW_MOD,
        Msg::MultipartRequest { .. } => ty::MULTIPART_REQUEST,
        Msg::MultipartReply { .. } => ty::MULTIPART_REPLY,
        Msg::BarrierRequest => ty::BARRIER_REQUEST,
        Msg::BarrierReply => ty::BARRIER_REPLY,
    }
}
