//! Flows as text, in `ovs-ofctl`'s words (`in_port=1,dl_dst=...`,
//! `actions=push_vlan:0x8100,set_field:10->vlan_vid,output:2`), for
//! `vswitchctl show flows`.
use dataplane::flow::key::{IPPROTO_UDP, VID_PRESENT};
use dataplane::flow::{Action, Match};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::protocol::format_mac;

fn masked_mac(name: &str, (v, m): ([u8; 6], [u8; 6])) -> String {
    if m == [0xff; 6] {
        format!("{name}={}", format_mac(&v))
    } else {
        format!("{name}={}/{}", format_mac(&v), format_mac(&m))
    }
}

/// An address and its mask: none when exact, a prefix length when it is
/// one, else the mask.
fn ip(name: &str, v: IpAddr, m: IpAddr, (ones, zeros, bits): (u32, u32, u32)) -> String {
    match ones {
        _ if ones == bits => format!("{name}={v}"),
        _ if ones + zeros == bits => format!("{name}={v}/{ones}"),
        _ => format!("{name}={v}/{m}"),
    }
}

fn v4(name: &str, (v, m): (u32, u32)) -> String {
    ip(name, Ipv4Addr::from(v).into(), Ipv4Addr::from(m).into(), (m.leading_ones(), m.trailing_zeros(), 32))
}

fn v6(name: &str, (v, m): (u128, u128)) -> String {
    ip(name, Ipv6Addr::from(v).into(), Ipv6Addr::from(m).into(), (m.leading_ones(), m.trailing_zeros(), 128))
}

pub fn fmt_match(m: &Match) -> String {
    let mut out = Vec::new();
    if let Some(p) = m.in_port {
        out.push(format!("in_port={p}"));
    }
    if let Some(d) = m.eth_src {
        out.push(masked_mac("dl_src", d));
    }
    if let Some(d) = m.eth_dst {
        out.push(masked_mac("dl_dst", d));
    }
    if let Some(t) = m.eth_type {
        out.push(format!("dl_type=0x{t:04x}"));
    }
    match m.vlan_vid {
        Some((0, _)) => out.push("vlan_tci=0x0000".into()),
        Some((v, 0x1fff | 0xffff)) => out.push(format!("dl_vlan={}", v & 0x0fff)),
        Some((v, k)) if v == VID_PRESENT && k == VID_PRESENT => out.push("vlan_tci=0x1000/0x1000".into()),
        Some((v, k)) => out.push(format!("vlan_vid=0x{v:04x}/0x{k:04x}")),
        None => {}
    }
    if let Some(p) = m.ip_proto {
        out.push(format!("nw_proto={p}"));
    }
    for (name, f) in [("nw_src", m.ipv4_src), ("nw_dst", m.ipv4_dst)] {
        if let Some(f) = f {
            out.push(v4(name, f));
        }
    }
    for (name, f) in [("ipv6_src", m.ipv6_src), ("ipv6_dst", m.ipv6_dst)] {
        if let Some(f) = f {
            out.push(v6(name, f));
        }
    }
    let l4 = if m.ip_proto == Some(IPPROTO_UDP) { "udp" } else { "tcp" };
    if let Some(p) = m.tp_src {
        out.push(format!("{l4}_src={p}"));
    }
    if let Some(p) = m.tp_dst {
        out.push(format!("{l4}_dst={p}"));
    }
    out.join(",")
}

pub fn fmt_actions(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "drop".into();
    }
    let one = |a: &Action| match *a {
        Action::Output(p) => format!("output:{p}"),
        Action::InPort => "IN_PORT".into(),
        Action::Flood => "FLOOD".into(),
        Action::All => "ALL".into(),
        Action::Normal => "NORMAL".into(),
        Action::Controller(0xffff) => "CONTROLLER".into(),
        Action::Controller(n) => format!("CONTROLLER:{n}"),
        Action::Table => "TABLE".into(),
        Action::PushVlan => "push_vlan:0x8100".into(),
        Action::PopVlan => "pop_vlan".into(),
        Action::SetEthSrc(m) => format!("set_field:{}->eth_src", format_mac(&m)),
        Action::SetEthDst(m) => format!("set_field:{}->eth_dst", format_mac(&m)),
        Action::SetVlanVid(v) => format!("set_field:{v}->vlan_vid"),
    };
    actions.iter().map(one).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::flow::key::ETHERTYPE_IPV4;

    #[test]
    fn flows_read_as_ovs_ofctl_writes_them() {
        let m = Match {
            in_port: Some(1),
            eth_dst: Some(([2, 0, 0, 0, 0, 2], [0xff; 6])),
            eth_type: Some(ETHERTYPE_IPV4),
            ip_proto: Some(17),
            ipv4_dst: Some((0x0a00_0000, 0xffff_ff00)),
            tp_dst: Some(53),
            vlan_vid: Some((VID_PRESENT | 10, 0x1fff)),
            ..Match::default()
        };
        assert_eq!(fmt_match(&m), "in_port=1,dl_dst=02:00:00:00:00:02,dl_type=0x0800,dl_vlan=10,nw_proto=17,nw_dst=10.0.0.0/24,udp_dst=53");
        assert_eq!(fmt_match(&Match::default()), "");
        assert_eq!(fmt_actions(&[Action::PushVlan, Action::SetVlanVid(10), Action::Output(2)]), "push_vlan:0x8100,set_field:10->vlan_vid,output:2");
        assert_eq!(fmt_actions(&[]), "drop");
        assert_eq!(fmt_actions(&[Action::Controller(0xffff)]), "CONTROLLER");
    }
}
