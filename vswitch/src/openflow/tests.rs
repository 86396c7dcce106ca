//! Round trips of every message, and malformed ones: an error to answer
//! or a closed connection, never a panic.
use dataplane::flow::key::{ETHERTYPE_IPV4, VID_PRESENT};
use dataplane::flow::{Action, Match};

use super::msg::*;
use super::multipart::{flow_size, split};
use super::wire::err;
use super::*;

fn round_trip(m: Msg) {
    let bytes = encode(&m, 42);
    let h = Header::parse(bytes[..8].try_into().unwrap());
    assert_eq!((h.version, usize::from(h.length), h.xid), (VERSION, bytes.len(), 42));
    let (h2, body) = read_message(&mut &bytes[..]).unwrap();
    assert_eq!(h, h2);
    assert_eq!(decode(h.kind, &body).unwrap(), m);
}

fn flow_stat(i: u16) -> FlowStat {
    FlowStat {
        duration: (3, 500),
        priority: i,
        idle_timeout: 10,
        hard_timeout: 20,
        flags: FLAG_SEND_FLOW_REM,
        cookie: 0xc0ffee,
        packets: 7,
        bytes: 700,
        matches: Match { in_port: Some(1), eth_type: Some(ETHERTYPE_IPV4), ipv4_dst: Some((0x0a00_0001, u32::MAX)), ..Match::default() },
        actions: vec![Action::PushVlan, Action::SetVlanVid(10), Action::Output(2)],
    }
}

fn port(n: u32) -> PortDesc {
    PortDesc { port_no: n, hw_addr: [2, 0, 0, 0, 0, n as u8], name: format!("vm{n}"), config: 0, state: 4 }
}

#[test]
fn every_message_round_trips() {
    let filter = FlowFilter { table_id: 0xff, out_port: 0xffff_ffff, cookie: 1, cookie_mask: 3, matches: Match { in_port: Some(2), ..Match::default() } };
    let msgs = vec![
        Msg::Hello { bitmap: 1 << 4 },
        Msg::Hello { bitmap: 0 },
        Msg::Error { kind: 1, code: 1, data: vec![4, 99, 0, 8, 0, 0, 0, 1] },
        Msg::EchoRequest(b"ping".to_vec()),
        Msg::EchoReply(vec![]),
        Msg::FeaturesRequest,
        Msg::FeaturesReply { dpid: 0x1234, n_buffers: 0, n_tables: 1, capabilities: 0x47 },
        Msg::GetConfigRequest,
        Msg::GetConfigReply { flags: 0, miss_send_len: 128 },
        Msg::SetConfig { flags: 0, miss_send_len: 0xffff },
        Msg::PacketIn(PacketIn { total_len: 60, reason: 1, table_id: 0, cookie: 9, in_port: 3, data: vec![0xab; 60] }),
        Msg::FlowRemoved(FlowRemoved { reason: 0, table_id: 0, stat: FlowStat { actions: vec![], flags: 0, ..flow_stat(5) } }),
        Msg::PortStatus { reason: 0, port: port(3) },
        Msg::PacketOut(PacketOut { buffer_id: NO_BUFFER, in_port: 0xffff_fffd, actions: vec![Action::Flood], data: vec![1; 64] }),
        Msg::FlowMod(FlowMod {
            cookie: 5,
            command: FlowCommand::ModifyStrict,
            priority: 100,
            buffer_id: NO_BUFFER,
            out_port: 0xffff_ffff,
            out_group: 0xffff_ffff,
            matches: Match { vlan_vid: Some((VID_PRESENT | 10, 0x1fff)), ..Match::default() },
            actions: vec![Action::PopVlan, Action::Normal],
            ..FlowMod::default()
        }),
        Msg::MultipartRequest { flags: 0, body: MpRequest::Desc },
        Msg::MultipartRequest { flags: 0, body: MpRequest::Flow(filter.clone()) },
        Msg::MultipartRequest { flags: 0, body: MpRequest::Aggregate(filter) },
        Msg::MultipartRequest { flags: 0, body: MpRequest::Table },
        Msg::MultipartRequest { flags: 0, body: MpRequest::PortStats { port_no: 0xffff_ffff } },
        Msg::MultipartRequest { flags: 0, body: MpRequest::PortDesc },
        Msg::MultipartRequest { flags: 0, body: MpRequest::TableFeatures },
        Msg::MultipartReply { more: false, body: MpReply::TableFeatures { name: "classifier".into(), max_entries: 65536 } },
        Msg::MultipartReply { more: false, body: MpReply::Desc { mfr: "m".into(), hw: "h".into(), sw: "s".into(), serial: "1".into(), dp: "br0".into() } },
        Msg::MultipartReply { more: true, body: MpReply::Flow(vec![flow_stat(1), flow_stat(2)]) },
        Msg::MultipartReply { more: false, body: MpReply::Aggregate { packets: 1, bytes: 2, flows: 3 } },
        Msg::MultipartReply { more: false, body: MpReply::Table { active: 2, lookups: 10, matched: 8 } },
        Msg::MultipartReply { more: false, body: MpReply::PortStats(vec![PortStats { port_no: 1, rx_packets: 5, tx_bytes: 9, duration_sec: 2, ..PortStats::default() }]) },
        Msg::MultipartReply { more: false, body: MpReply::PortDesc(vec![port(1), port(2)]) },
        Msg::BarrierRequest,
        Msg::BarrierReply,
    ];
    for m in msgs {
        round_trip(m);
    }
}

#[test]
fn long_flow_lists_are_cut_into_replies_under_the_limit() {
    let flows: Vec<FlowStat> = (0..2000).map(flow_stat).collect();
    let replies = split(&flows, flow_size, MpReply::Flow);
    assert!(replies.len() > 1);
    let mut seen = 0;
    for (i, r) in replies.iter().enumerate() {
        let bytes = encode(r, 1);
        assert!(bytes.len() <= 65535);
        let Ok(Msg::MultipartReply { more, body: MpReply::Flow(v) }) = decode(bytes[1], &bytes[8..]) else { panic!("a flow reply") };
        assert_eq!(more, i + 1 < replies.len());
        seen += v.len();
    }
    assert_eq!(seen, flows.len());
    assert_eq!(split(&[] as &[FlowStat], flow_size, MpReply::Flow).len(), 1, "an empty list is one empty reply");
}

#[test]
fn truncated_bodies_are_errors_never_panics() {
    let samples = [
        encode(&Msg::FlowMod(FlowMod { actions: vec![Action::Output(1)], ..FlowMod::default() }), 1),
        encode(&Msg::PacketOut(PacketOut { buffer_id: NO_BUFFER, in_port: 1, actions: vec![Action::Output(2)], data: vec![] }), 1),
        encode(&Msg::MultipartRequest { flags: 0, body: MpRequest::Flow(FlowFilter::default()) }, 1),
        encode(&Msg::MultipartReply { more: false, body: MpReply::Flow(vec![flow_stat(1)]) }, 1),
        encode(&Msg::PortStatus { reason: 0, port: port(1) }, 1),
        encode(&Msg::FlowRemoved(FlowRemoved { reason: 0, table_id: 0, stat: flow_stat(1) }), 1),
        encode(&Msg::Hello { bitmap: 16 }, 1),
    ];
    for s in &samples {
        for cut in 8..s.len() {
            // Whatever the outcome, no panic; the full body decodes.
            let _ = decode(s[1], &s[8..cut]);
        }
        assert!(decode(s[1], &s[8..]).is_ok());
    }
    // A FLOW_MOD cut inside its fixed part is BAD_LEN.
    assert_eq!(decode(ty::FLOW_MOD, &samples[0][8..20]), Err(err::BAD_LEN));
    // A PACKET_OUT whose actions_len runs past the message.
    let mut po = samples[1].clone();
    po[16..18].copy_from_slice(&200u16.to_be_bytes());
    assert_eq!(decode(ty::PACKET_OUT, &po[8..]), Err(err::BAD_LEN));
    // A flow entry whose length says less than its header.
    let mut fr = samples[3].clone();
    fr[16..18].copy_from_slice(&1u16.to_be_bytes());
    assert!(decode(ty::MULTIPART_REPLY, &fr[8..]).is_err());
}

#[test]
fn unknown_and_unsupported_requests_are_errors() {
    assert_eq!(decode(15, &[]), Err(err::BAD_TYPE), "GROUP_MOD");
    assert_eq!(decode(200, &[]), Err(err::BAD_TYPE));
    assert_eq!(decode(ty::MULTIPART_REQUEST, &[0, 12, 0, 0, 0, 0, 0, 0, 0, 64]), Err(err::TABLE_FEATURES_EPERM), "setting table features");
    assert_eq!(decode(ty::MULTIPART_REQUEST, &[0, 7, 0, 0, 0, 0, 0, 0]), Err(err::BAD_MULTIPART), "GROUP_DESC");
    assert_eq!(decode(ty::FEATURES_REQUEST, &[0]), Err(err::BAD_LEN));
    let mut fm = encode(&Msg::FlowMod(FlowMod::default()), 1);
    fm[25] = 9;
    assert_eq!(decode(ty::FLOW_MOD, &fm[8..]), Err(err::BAD_COMMAND));
}

#[test]
fn framing_refuses_a_length_under_the_header_and_a_short_stream() {
    let bad = [4u8, 0, 0, 4, 0, 0, 0, 1];
    assert!(read_message(&mut &bad[..]).is_err());
    let lying = [4u8, 0, 0, 100, 0, 0, 0, 1, 0, 0];
    assert!(read_message(&mut &lying[..]).is_err(), "claims 100 bytes, sends 10");
    let hello = encode(&Msg::Hello { bitmap: 0 }, 7);
    let (h, body) = read_message(&mut &hello[..]).unwrap();
    assert_eq!((h.kind, h.xid, body.len()), (ty::HELLO, 7, 0));
}
