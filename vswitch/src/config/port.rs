//! One `[[port]]` table checked into a `PortConfig`.
use super::*;

/// kbit/s and kbit, as OVS takes them (a 32-bit integer).
const POLICING: Range = 0..=u32::MAX as i64;

pub(super) fn validate_port(raw: RawPort, sw: &SwitchConfig, cx: &Ctx) -> Res<PortConfig> {
    let name = cx.required("name", raw.name)?;
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
    // 15 = IFNAMSIZ - 1, so that a port name can also name a kernel interface.
    if name.len() > 15 || !name.bytes().all(name_char) {
        let msg = format!("{name:?} is not 1 to 15 characters of [A-Za-z0-9_.-]");
        return Err(cx.err("name", msg));
    }
    let server_only = [
        ("owner", raw.owner.is_some()),
        ("group", raw.group.is_some()),
        ("permissions", raw.permissions.is_some()),
    ];
    let kind = match cx.choice("type", raw.kind, &[("dpdk", false), ("vhost-user", true)])? {
        None => return Err(cx.err("type", "missing required field")),
        Some(false) => {
            let vhost_only = [
                ("mode", raw.mode.is_some()),
                ("path", raw.path.is_some()),
                ("datapath", raw.datapath.is_some()),
            ];
            cx.reject("for type = \"dpdk\"", &vhost_only)?;
            cx.reject("for type = \"dpdk\"", &server_only)?;
            let desc = |key, v| -> Res<u16> {
                match cx.opt::<u16>(key, v, 1024, 64..=4096)? {
                    n if n.is_power_of_two() => Ok(n),
                    n => Err(cx.err(key, format!("{n} is not a power of two"))),
                }
            };
            let devargs = cx.required("devargs", raw.devargs)?;
            let (rx_desc, tx_desc) = (desc("rx_desc", raw.rx_desc)?, desc("tx_desc", raw.tx_desc)?);
            PortKind::Dpdk {
                devargs,
                rx_desc,
                tx_desc,
            }
        }
        Some(true) => {
            let dpdk_only = [
                ("devargs", raw.devargs.is_some()),
                ("rx_desc", raw.rx_desc.is_some()),
                ("tx_desc", raw.tx_desc.is_some()),
            ];
            cx.reject("for type = \"vhost-user\"", &dpdk_only)?;
            let modes = [("client", VhostMode::Client), ("server", VhostMode::Server)];
            let mode = cx
                .choice("mode", raw.mode, &modes)?
                .unwrap_or(VhostMode::Client);
            if mode == VhostMode::Client {
                // QEMU creates a client-mode socket: its owner is not ours to set.
                cx.reject("with mode = \"client\"", &server_only)?;
            }
            let permissions = match cx.text("permissions", raw.permissions)? {
                Some(p) if p.len() <= 4 && p.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
                    u32::from_str_radix(&p, 8).ok()
                }
                Some(p) => {
                    let msg = format!("{p:?} is not an octal mode like \"0660\"");
                    return Err(cx.err("permissions", msg));
                }
                None => None,
            };
            let paths = [
                ("rte_vhost", Datapath::RteVhost),
                ("copy-once", Datapath::CopyOnce),
            ];
            PortKind::VhostUser {
                mode,
                path: socket_path(cx, "path", sw.socket_dir.join(cx.required("path", raw.path)?))?,
                owner: cx.text("owner", raw.owner)?,
                group: cx.text("group", raw.group)?,
                permissions,
                datapath: cx
                    .choice("datapath", raw.datapath, &paths)?
                    .unwrap_or(Datapath::RteVhost),
            }
        }
    };
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
        (Some(v), None) => VlanMode::Access(cx.int("vlan", v, VLAN)?),
        (None, Some(t)) if t.is_empty() => return Err(cx.err("trunk", "must list a VLAN")),
        (None, Some(t)) => VlanMode::Trunk(cx.ints("trunk", t, VLAN)?),
        (None, None) => VlanMode::Access(1),
    };
    if let VlanMode::Trunk(vlans) = &vlan_mode {
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
        ingress_policing_rate: cx.opt("ingress_policing_rate", raw.ingress_policing_rate, 0, POLICING)?,
        ingress_policing_burst: cx.opt("ingress_policing_burst", raw.ingress_policing_burst, 0, POLICING)?,
    })
}
