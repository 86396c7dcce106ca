//! One `[[port]]` table checked into a `PortConfig`.
use super::*;

/// kbit/s and kbit, as OVS takes them (a 32-bit integer).
const POLICING: Range = 0..=u32::MAX as i64;

/// Each type's own keys (an error on a port of another type), and the
/// function that checks them into its `PortKind`.
type KindCheck = fn(&mut RawPort, &SwitchConfig, &Ctx) -> Res<PortKind>;
const KINDS: [(&str, &[&str], KindCheck); 3] = [
    ("dpdk", &["devargs", "rx_desc", "tx_desc"], dpdk),
    ("vhost-user", &["mode", "path", "owner", "group", "permissions", "datapath"], vhost_user),
    ("vxlan", &["vni", "local_ip", "remote_ips", "underlay"], vxlan),
];

pub(super) fn validate_port(map: &Map<String, Value>, sw: &SwitchConfig, cx: &Ctx) -> Res<PortConfig> {
    let mut raw: RawPort = cx.decode(map)?;
    let name = cx.required("name", raw.name.take())?;
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
    // 15 = IFNAMSIZ - 1, so that a port name can also name a kernel interface.
    if name.len() > 15 || !name.bytes().all(name_char) {
        let msg = format!("{name:?} is not 1 to 15 characters of [A-Za-z0-9_.-]");
        return Err(cx.err("name", msg));
    }
    let types: Vec<(&str, usize)> = KINDS.iter().enumerate().map(|(i, k)| (k.0, i)).collect();
    let Some(k) = cx.choice("type", raw.kind.take(), &types)? else {
        return Err(cx.err("type", "missing required field"));
    };
    let (type_name, _, check) = KINDS[k];
    let set = |key: &&&str| map.get(**key).is_some_and(|v| !v.is_null());
    let foreign = KINDS.iter().filter(|o| o.0 != type_name).flat_map(|o| o.1.iter());
    if let Some(key) = foreign.into_iter().find(set) {
        return Err(cx.err(key, format!("not allowed for type = {type_name:?}")));
    }
    let kind = check(&mut raw, sw, cx)?;
    let rx_queues: u16 = cx.opt("rx_queues", raw.rx_queues, 1, 1..=dataplane::counters::MAX_RXQ as i64)?;
    let rxq_pmd = match raw.rxq_pmd {
        Some(v) if v.len() != usize::from(rx_queues) => {
            let msg = format!("has {} entries but rx_queues is {rx_queues}", v.len());
            return Err(cx.err("rxq_pmd", msg));
        }
        Some(v) => Some(cx.ints::<u32>("rxq_pmd", v, CORE)?),
        None => None,
    };
    let cores = rxq_pmd.iter().flatten();
    if let Some(c) = cores.into_iter().find(|c| !sw.pmd_cores.contains(c)) {
        let msg = format!("core {c} is not in switch.pmd_cores {:?}", sw.pmd_cores);
        return Err(cx.err("rxq_pmd", msg));
    }
    let vlan_mode = match (raw.vlan, raw.trunk) {
        (Some(_), Some(_)) => return Err(cx.err("vlan", "vlan and trunk are mutually exclusive")),
        (Some(v), None) => VlanConfig::Access(cx.int("vlan", v, VLAN)?),
        (None, Some(t)) if t.is_empty() => return Err(cx.err("trunk", "must list a VLAN")),
        (None, Some(t)) => VlanConfig::Trunk(cx.ints("trunk", t, VLAN)?),
        (None, None) => VlanConfig::Access(1),
    };
    if let VlanConfig::Trunk(vlans) = &vlan_mode {
        cx.unique("trunk", vlans)?;
    }
    let mtu = cx.opt("mtu", raw.mtu, 1500, 68..=9000)?;
    Ok(PortConfig {
        name,
        kind,
        mtu,
        vlan_mode,
        rx_queues,
        rxq_pmd,
        offloads: raw.offloads.unwrap_or(true),
        mac_limit: raw.mac_limit.map(|n| cx.int("mac_limit", n, 1..=1_048_576)).transpose()?,
        packed_rings: raw.packed_rings.unwrap_or(true),
        in_order: raw.in_order.unwrap_or(true),
        ingress_policing_rate: cx.opt("ingress_policing_rate", raw.ingress_policing_rate, 0, POLICING)?,
        ingress_policing_burst: cx.opt("ingress_policing_burst", raw.ingress_policing_burst, 0, POLICING)?,
    })
}

fn dpdk(raw: &mut RawPort, _: &SwitchConfig, cx: &Ctx) -> Res<PortKind> {
    let desc = |key, v| -> Res<u16> {
        match cx.opt::<u16>(key, v, 1024, 64..=4096)? {
            n if n.is_power_of_two() => Ok(n),
            n => Err(cx.err(key, format!("{n} is not a power of two"))),
        }
    };
    let devargs = cx.required("devargs", raw.devargs.take())?;
    let (rx_desc, tx_desc) = (desc("rx_desc", raw.rx_desc)?, desc("tx_desc", raw.tx_desc)?);
    Ok(PortKind::Dpdk { devargs, rx_desc, tx_desc })
}

fn vhost_user(raw: &mut RawPort, sw: &SwitchConfig, cx: &Ctx) -> Res<PortKind> {
    let modes = [("client", VhostMode::Client), ("server", VhostMode::Server)];
    let mode = cx.choice("mode", raw.mode.take(), &modes)?.unwrap_or(VhostMode::Client);
    if mode == VhostMode::Client {
        // QEMU creates a client-mode socket: its owner is not ours to set.
        let server_only = [
            ("owner", raw.owner.is_some()),
            ("group", raw.group.is_some()),
            ("permissions", raw.permissions.is_some()),
        ];
        cx.reject("with mode = \"client\"", &server_only)?;
    }
    let permissions = match cx.text("permissions", raw.permissions.take())? {
        Some(p) if p.len() <= 4 && p.bytes().all(|b| (b'0'..=b'7').contains(&b)) => u32::from_str_radix(&p, 8).ok(),
        Some(p) => {
            let msg = format!("{p:?} is not an octal mode like \"0660\"");
            return Err(cx.err("permissions", msg));
        }
        None => None,
    };
    let paths = [("rte_vhost", Datapath::RteVhost), ("copy-once", Datapath::CopyOnce)];
    Ok(PortKind::VhostUser {
        mode,
        path: socket_path(cx, "path", sw.socket_dir.join(cx.required("path", raw.path.take())?))?,
        owner: cx.text("owner", raw.owner.take())?,
        group: cx.text("group", raw.group.take())?,
        permissions,
        datapath: cx.choice("datapath", raw.datapath.take(), &paths)?.unwrap_or(Datapath::RteVhost),
    })
}

fn vxlan(raw: &mut RawPort, _: &SwitchConfig, cx: &Ctx) -> Res<PortKind> {
    let ip = |key: &str, v: &str| -> Res<Ipv4Addr> {
        match v.parse::<Ipv4Addr>() {
            Ok(a) if !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast() => Ok(a),
            _ => Err(cx.err(key, format!("{v:?} is not a unicast IPv4 address"))),
        }
    };
    let vni = match raw.vni {
        Some(v) => cx.int("vni", v, 0..=0xff_ffff)?,
        None => return Err(cx.err("vni", "missing required field")),
    };
    let local_ip = ip("local_ip", &cx.required("local_ip", raw.local_ip.take())?)?;
    let remote_ips = match raw.remote_ips.take() {
        Some(v) if !v.is_empty() => v.iter().map(|a| ip("remote_ips", a)).collect::<Res<Vec<_>>>()?,
        _ => return Err(cx.err("remote_ips", "must list at least one remote endpoint")),
    };
    cx.unique("remote_ips", &remote_ips)?;
    if remote_ips.contains(&local_ip) {
        return Err(cx.err("remote_ips", format!("{local_ip} is the local_ip")));
    }
    let underlay = cx.required("underlay", raw.underlay.take())?;
    Ok(PortKind::Vxlan { vni, local_ip, remote_ips, underlay })
}
