//! Multipart replies: their bodies, and a long list cut into replies that
//! each fit a message (all but the last flagged REPLY_MORE).
use super::action::{read_instructions, write_instructions};
use super::msg::{mp, read_port, write_port, FlowStat, Msg, MpReply, PortStats, HEADER};
use super::oxm::{read_match, write_match};
use super::wire::{err, Reader, Res, Writer};

const REPLY_MORE: u16 = 1;
/// A reply's body at most, leaving room for the headers.
const MAX_BODY: usize = 60_000;

fn text(r: &mut Reader, n: usize) -> Res<String> {
    let b = r.bytes(n)?;
    Ok(String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap_or(n)]).into_owned())
}

fn write_flow(w: &mut Writer, f: &FlowStat) {
    let start = w.len();
    w.u16(0).u8(0).u8(0).u32(f.duration.0).u32(f.duration.1).u16(f.priority).u16(f.idle_timeout).u16(f.hard_timeout);
    w.u16(f.flags).zeros(4).u64(f.cookie).u64(f.packets).u64(f.bytes);
    write_match(w, &f.matches);
    write_instructions(w, &f.actions);
    let len = w.len() - start;
    w.patch_u16(start, len as u16);
}

fn read_flow(r: &mut Reader) -> Res<FlowStat> {
    let len = r.u16()? as usize;
    let mut e = r.sub(len.checked_sub(2).ok_or(err::BAD_LEN)?)?;
    e.skip(2)?;
    let duration = (e.u32()?, e.u32()?);
    let (priority, idle_timeout, hard_timeout, flags) = (e.u16()?, e.u16()?, e.u16()?, e.u16()?);
    e.skip(4)?;
    let (cookie, packets, bytes) = (e.u64()?, e.u64()?, e.u64()?);
    let matches = read_match(&mut e)?;
    let actions = read_instructions(&mut e)?;
    Ok(FlowStat { duration, priority, idle_timeout, hard_timeout, flags, cookie, packets, bytes, matches, actions })
}

fn write_port_stats(w: &mut Writer, p: &PortStats) {
    w.u32(p.port_no).zeros(4).u64(p.rx_packets).u64(p.tx_packets).u64(p.rx_bytes).u64(p.tx_bytes);
    w.u64(p.rx_dropped).u64(p.tx_dropped).zeros(6 * 8).u32(p.duration_sec).u32(0);
}

fn read_port_stats(r: &mut Reader) -> Res<PortStats> {
    let port_no = r.u32()?;
    r.skip(4)?;
    let (rx_packets, tx_packets, rx_bytes, tx_bytes, rx_dropped, tx_dropped) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    r.skip(6 * 8)?;
    let duration_sec = r.u32()?;
    r.skip(4)?;
    Ok(PortStats { port_no, rx_packets, tx_packets, rx_bytes, tx_bytes, rx_dropped, tx_dropped, duration_sec })
}

pub(super) fn encode_reply(w: &mut Writer, more: bool, body: &MpReply) {
    let kind = match body {
        MpReply::Desc { .. } => mp::DESC,
        MpReply::Flow(_) => mp::FLOW,
        MpReply::Aggregate { .. } => mp::AGGREGATE,
        MpReply::Table { .. } => mp::TABLE,
        MpReply::PortStats(_) => mp::PORT_STATS,
        MpReply::TableFeatures { .. } => mp::TABLE_FEATURES,
        MpReply::PortDesc(_) => mp::PORT_DESC,
    };
    w.u16(kind).u16(if more { REPLY_MORE } else { 0 }).zeros(4);
    match body {
        MpReply::Desc { mfr, hw, sw, serial, dp } => {
            w.text(mfr, 256).text(hw, 256).text(sw, 256).text(serial, 32).text(dp, 256);
        }
        MpReply::Flow(flows) => flows.iter().for_each(|f| write_flow(w, f)),
        MpReply::Aggregate { packets, bytes, flows } => {
            w.u64(*packets).u64(*bytes).u32(*flows).zeros(4);
        }
        MpReply::Table { active, lookups, matched } => {
            w.u8(0).zeros(3).u32(*active).u64(*lookups).u64(*matched);
        }
        MpReply::PortStats(ports) => ports.iter().for_each(|p| write_port_stats(w, p)),
        MpReply::TableFeatures { name, max_entries } => {
            let start = w.len();
            w.u16(0).u8(0).zeros(5).text(name, 32).u64(0).u64(0).u32(0).u32(*max_entries);
            table_properties(w);
            let len = w.len() - start;
            w.patch_u16(start, len as u16);
        }
        MpReply::PortDesc(ports) => ports.iter().for_each(|p| write_port(w, p)),
    }
}

/// What table 0 can do, as the properties OVS requires of a table:
/// instructions, next tables (none), write actions (none), apply
/// actions, match fields (maskable ones flagged), wildcards, write
/// set-fields (none), apply set-fields.
fn table_properties(w: &mut Writer) {
    use super::oxm::*;
    const FIELDS: [(u8, u8, bool); 14] = [
        (IN_PORT, 4, false),
        (ETH_DST, 6, true),
        (ETH_SRC, 6, true),
        (ETH_TYPE, 2, false),
        (VLAN_VID, 2, true),
        (IP_PROTO, 1, false),
        (IPV4_SRC, 4, true),
        (IPV4_DST, 4, true),
        (TCP_SRC, 2, false),
        (TCP_DST, 2, false),
        (UDP_SRC, 2, false),
        (UDP_DST, 2, false),
        (IPV6_SRC, 16, true),
        (IPV6_DST, 16, true),
    ];
    let prop = |w: &mut Writer, kind: u16, body: &dyn Fn(&mut Writer)| {
        let start = w.len();
        w.u16(kind).u16(0);
        body(w);
        let len = w.len() - start;
        w.patch_u16(start + 2, len as u16);
        w.pad8(start);
    };
    let oxm = |w: &mut Writer, field: u8, len: u8, mask: bool| {
        w.u16(0x8000).u8(field << 1 | u8::from(mask)).u8(if mask { 2 * len } else { len });
    };
    prop(w, 0, &|w| {
        w.u16(4).u16(4).u16(5).u16(4);
    });
    prop(w, 2, &|_| {});
    prop(w, 4, &|_| {});
    prop(w, 6, &|w| {
        for a in [0u16, 17, 18, 25] {
            w.u16(a).u16(4);
        }
    });
    prop(w, 8, &|w| FIELDS.iter().for_each(|&(f, l, m)| oxm(w, f, l, m)));
    prop(w, 10, &|w| FIELDS.iter().for_each(|&(f, l, _)| oxm(w, f, l, false)));
    prop(w, 12, &|_| {});
    prop(w, 14, &|w| [(ETH_DST, 6), (ETH_SRC, 6), (VLAN_VID, 2)].iter().for_each(|&(f, l)| oxm(w, f, l, false)));
}

/// Entries to the end of the body.
fn list<T>(r: &mut Reader, f: fn(&mut Reader) -> Res<T>) -> Res<Vec<T>> {
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(f(r)?);
    }
    Ok(v)
}

pub(super) fn decode_reply(r: &mut Reader) -> Res<Msg> {
    let (kind, flags) = (r.u16()?, r.u16()?);
    r.skip(4)?;
    let body = match kind {
        mp::DESC => MpReply::Desc { mfr: text(r, 256)?, hw: text(r, 256)?, sw: text(r, 256)?, serial: text(r, 32)?, dp: text(r, 256)? },
        mp::FLOW => MpReply::Flow(list(r, read_flow)?),
        mp::AGGREGATE => MpReply::Aggregate { packets: r.u64()?, bytes: r.u64()?, flows: r.u32()? },
        mp::TABLE => {
            r.skip(4)?;
            MpReply::Table { active: r.u32()?, lookups: r.u64()?, matched: r.u64()? }
        }
        mp::PORT_STATS => MpReply::PortStats(list(r, read_port_stats)?),
        mp::PORT_DESC => MpReply::PortDesc(list(r, read_port)?),
        mp::TABLE_FEATURES => {
            let len = r.u16()? as usize;
            let mut t = r.sub(len.checked_sub(2).ok_or(err::BAD_LEN)?)?;
            t.skip(6)?;
            let name = text(&mut t, 32)?;
            t.skip(20)?;
            MpReply::TableFeatures { name, max_entries: t.u32()? }
        }
        _ => return Err(err::BAD_MULTIPART),
    };
    Ok(Msg::MultipartReply { more: flags & REPLY_MORE != 0, body })
}

/// `items` in as many replies as it takes, each under the message limit.
pub fn split<T: Clone>(items: &[T], size: impl Fn(&T) -> usize, wrap: impl Fn(Vec<T>) -> MpReply) -> Vec<Msg> {
    let mut out = Vec::new();
    let (mut cur, mut bytes) = (Vec::new(), HEADER + 8);
    for it in items {
        let n = size(it);
        if !cur.is_empty() && bytes + n > MAX_BODY {
            out.push(std::mem::take(&mut cur));
            bytes = HEADER + 8;
        }
        cur.push(it.clone());
        bytes += n;
    }
    out.push(cur);
    let last = out.len() - 1;
    out.into_iter().enumerate().map(|(i, v)| Msg::MultipartReply { more: i < last, body: wrap(v) }).collect()
}

/// The bytes a flow takes in a FLOW reply.
pub fn flow_size(f: &FlowStat) -> usize {
    let mut w = Writer::default();
    write_flow(&mut w, f);
    w.len()
}
