//! Switch configuration: a TOML file with one `[switch]` table and one
//! `[[port]]` table per port, plus a JSON state file that records the ports
//! added and deleted at run time so that they survive a restart.
//!
//! ```toml
//! [switch]
//! pmd_cores = [1]             # one poll-mode thread per core
//! socket_dir = "/run/vswitch" # relative vhost-user paths live here
//! metrics = "127.0.0.1:9478"  # GET /metrics (Prometheus); off when absent
//!
//! [[port]]
//! name = "vm1"
//! type = "vhost-user"         # or "dpdk" (with devargs = "0000:01:00.0"), "vxlan"
//! path = "vm1.sock"
//! vlan = 10                   # or trunk = [10, 20]; neither = VLAN 1
//! ```
//!
//! Every key is optional except a port's `name`, `type`, and its type's
//! own required keys (`port.rs`). The file is read into private raw structs whose fields are all
//! optional (and integers `i64`), then validated into the public types, so
//! that every error names the file, the field and what is wrong with it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::fmt::{self, Display};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub switch: SwitchConfig,
    #[serde(rename = "port")]
    pub ports: Vec<PortConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchConfig {
    /// One poll-mode thread per core; never contains `main_core`.
    pub pmd_cores: Vec<u32>,
    pub main_core: u32,
    pub eal_args: Vec<String>,
    pub hugepages: Hugepages,
    pub memory_mb: u32,
    pub control_socket: PathBuf,
    pub socket_dir: PathBuf,
    /// Default: the config path with `.state.json` appended.
    pub state_file: PathBuf,
    pub fdb_size: usize,
    pub fdb_aging_secs: u32,
    pub vhost_retries: u32,
    /// Where `GET /metrics` is served (Prometheus text); none when absent.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// The bridge's OpenFlow management socket, for `ovs-ofctl -O
    /// OpenFlow13 ... unix:PATH` (default: `br0.mgmt` in `socket_dir`).
    #[serde(default)]
    pub openflow_socket: PathBuf,
    /// The OpenFlow controller to connect to (`tcp:IP:PORT`), if any.
    #[serde(default)]
    pub controller: Option<String>,
    /// How the PMD threads sleep when idle and share the rx queues.
    #[serde(default)]
    pub pmd: PmdConfig,
    /// A copy-once guest's frame bound for a NIC that can read guest memory
    /// leaves from the guest's buffer, its payload not copied (README,
    /// "Zero copy to NICs").
    pub zero_copy: bool,
    /// Frames shorter than this are copied even so: a copy costs less than
    /// a loan.
    pub zero_copy_min_bytes: u32,
    /// Chains of one guest transmit ring lent to NICs at once (beyond it,
    /// frames are copied); 0: half the ring.
    pub zero_copy_in_flight: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hugepages {
    /// Hugepages if /proc/meminfo shows free ones, else `--no-huge`.
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortConfig {
    pub name: String,
    pub kind: PortKind,
    pub mtu: u16,
    pub vlan_mode: VlanConfig,
    pub rx_queues: u16,
    /// Core of rx queue i: `rx_queues` entries, each one of `pmd_cores`.
    pub rxq_pmd: Option<Vec<u32>>,
    /// Checksum and TSO offloads: negotiated with a guest, or used on a
    /// NIC that has them (`offloads = false`: the switch segments and sums
    /// everything for this port, and a guest is offered none).
    #[serde(default = "offloads_default")]
    pub offloads: bool,
    /// MAC addresses this port may have in the MAC table at once; a new
    /// source beyond it is forwarded unlearned (default: 1024 for a VM,
    /// the whole table for a NIC).
    #[serde(default)]
    pub mac_limit: Option<u32>,
    /// Packed virtqueues offered to a copy-once guest (default; off with
    /// `packed_rings = false`). Their positions are kept across switch
    /// restarts beside the socket (README: Copy-once ports).
    #[serde(default = "offloads_default")]
    pub packed_rings: bool,
    /// VIRTIO_F_IN_ORDER offered to a copy-once guest (default; off with
    /// `in_order = false`): its chains go back in the order it offered
    /// them, so its frames to NICs are copied, not lent (README: Zero copy
    /// to NICs).
    #[serde(default = "offloads_default")]
    pub in_order: bool,
    /// Ingress policing, as OVS's interface columns: the rate in kbit/s
    /// (0: none) and the bucket in kbit (0: 8000).
    #[serde(default)]
    pub ingress_policing_rate: u32,
    #[serde(default)]
    pub ingress_policing_burst: u32,
}

/// In a directory of its own, root's alone: not the one QEMU may write.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/vswitchd/vswitchd.ctl";

/// A unix socket path: 107 bytes at most (sun_path), or the kernel would
/// cut it (or rte_vhost refuse it) far from the config that named it.
fn socket_path(cx: &Ctx, key: &str, path: PathBuf) -> Res<PathBuf> {
    const SUN_PATH: usize = 107;
    if path.as_os_str().len() > SUN_PATH {
        return Err(cx.err(key, format!("{} is longer than a unix socket path may be ({SUN_PATH} bytes)", path.display())));
    }
    Ok(path)
}

/// `offloads`, `packed_rings` and `in_order`: on unless a port says otherwise.
fn offloads_default() -> bool {
    true
}

/// A VM rarely has more than a few MAC addresses; a NIC may front a whole
/// network.
const VM_MAC_LIMIT: u32 = 1024;

impl PortConfig {
    /// `mac_limit`, or its default for the port's type in a table of
    /// `fdb_size` entries.
    pub fn mac_limit(&self, fdb_size: usize) -> u32 {
        let table = u32::try_from(fdb_size).unwrap_or(u32::MAX);
        self.mac_limit.unwrap_or(match self.kind {
            PortKind::VhostUser { .. } => VM_MAC_LIMIT.min(table),
            PortKind::Dpdk { .. } | PortKind::Vxlan { .. } => table,
        })
    }

    /// Mbufs the port's rings can hold, for sizing the pool.
    pub fn ring_mbufs(&self, pmds: u32) -> u32 {
        match &self.kind {
            PortKind::Dpdk { rx_desc, tx_desc, .. } => self.rx_queues as u32 * *rx_desc as u32 + pmds * *tx_desc as u32,
            // rte_vhost copies: no mbuf waits in a guest's ring, only in flight.
            PortKind::VhostUser { .. } => self.rx_queues as u32 * pmd_bridge::BURST as u32,
            // Its frames wait in its underlay's rings, counted there.
            PortKind::Vxlan { .. } => 0,
        }
    }
}

/// A port's type and the settings only that type has. Adding a type: its
/// variant here, its keys and checks in `port.rs`, how it opens and shows
/// in `ports.rs`, its queues in `switch/plans.rs`.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum PortKind {
    Dpdk {
        devargs: String,
        rx_desc: u16,
        tx_desc: u16,
    },
    VhostUser {
        #[serde(with = "VhostModeDef")]
        mode: VhostMode,
        /// Absolute: a relative `path` is joined to `socket_dir`.
        path: PathBuf,
        /// User name or numeric uid; owner, group and permissions are
        /// `None` in client mode.
        owner: Option<String>,
        group: Option<String>,
        /// Mode bits, e.g. 0o660.
        permissions: Option<u32>,
        datapath: Datapath,
    },
    /// A VXLAN tunnel endpoint (RFC 7348) for one VNI, over the UDP/IP of
    /// a `dpdk` port (`underlay`); `remote_ips` are the endpoints it floods
    /// to and the only ones it accepts frames from.
    Vxlan {
        vni: u32,
        local_ip: Ipv4Addr,
        remote_ips: Vec<Ipv4Addr>,
        underlay: String,
    },
}

impl PortKind {
    /// The `type` key's value.
    pub fn name(&self) -> &'static str {
        match self {
            PortKind::Dpdk { .. } => "dpdk",
            PortKind::VhostUser { .. } => "vhost-user",
            PortKind::Vxlan { .. } => "vxlan",
        }
    }

    /// The vhost-user socket the port uses, which no other port may.
    pub fn socket(&self) -> Option<&Path> {
        match self {
            PortKind::VhostUser { path, .. } => Some(path),
            _ => None,
        }
    }

    /// A socket the switch created (server mode), to remove when it stops.
    pub fn server_socket(&self) -> Option<&Path> {
        match self {
            PortKind::VhostUser { path, mode: VhostMode::Server, .. } => Some(path),
            _ => None,
        }
    }
}

/// Which side of the socket the switch takes: pmd-bridge's own type, read
/// and written as "client" or "server".
pub use pmd_bridge::VhostMode;

#[derive(Serialize, Deserialize)]
#[serde(remote = "VhostMode", rename_all = "lowercase")]
enum VhostModeDef {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datapath {
    #[serde(rename = "rte_vhost")]
    RteVhost,
    #[serde(rename = "copy-once")]
    CopyOnce,
}

/// The `vlan` or `trunk` key; the data path's form is `dataplane::vlan::VlanMode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VlanConfig {
    /// Untagged frames belong to this VLAN (1 when neither key is set).
    Access(u16),
    Trunk(Vec<u16>),
}

impl VlanConfig {
    pub fn to_dataplane(&self) -> dataplane::vlan::VlanMode {
        use dataplane::vlan::{VlanMode, VlanSet};
        match self {
            VlanConfig::Access(v) => VlanMode::Access(*v),
            VlanConfig::Trunk(vs) => VlanMode::Trunk(Box::new(VlanSet::new(vs))),
        }
    }
}

impl Display for VlanConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VlanConfig::Access(v) => write!(f, "access {v}"),
            VlanConfig::Trunk(vs) => write!(f, "trunk {}", vs.iter().map(u16::to_string).collect::<Vec<_>>().join(",")),
        }
    }
}

/// `origin: field: message`; `origin` is empty for control-socket requests
/// and `field` for errors that belong to no field (TOML syntax, I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    pub field: String,
    pub message: String,
}

impl Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in [&self.origin, &self.field]
            .into_iter()
            .filter(|p| !p.is_empty())
        {
            write!(f, "{part}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    switch: Option<Map<String, Value>>,
    port: Option<Vec<Map<String, Value>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    pmd_cores: Option<Vec<i64>>,
    main_core: Option<i64>,
    eal_args: Option<Vec<String>>,
    hugepages: Option<String>,
    memory_mb: Option<i64>,
    control_socket: Option<String>,
    socket_dir: Option<String>,
    state_file: Option<String>,
    fdb_size: Option<i64>,
    fdb_aging_secs: Option<i64>,
    vhost_retries: Option<i64>,
    metrics: Option<String>,
    openflow_socket: Option<String>,
    controller: Option<String>,
    pmd_sleep_max_us: Option<i64>,
    pmd_auto_lb: Option<bool>,
    pmd_auto_lb_load_threshold: Option<i64>,
    pmd_auto_lb_improvement_threshold: Option<i64>,
    pmd_auto_lb_rebal_interval: Option<i64>,
    zero_copy: Option<bool>,
    zero_copy_min_bytes: Option<i64>,
    zero_copy_in_flight: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    mode: Option<String>,
    path: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    permissions: Option<String>,
    datapath: Option<String>,
    devargs: Option<String>,
    rx_queues: Option<i64>,
    rx_desc: Option<i64>,
    tx_desc: Option<i64>,
    rxq_pmd: Option<Vec<i64>>,
    mtu: Option<i64>,
    vlan: Option<i64>,
    trunk: Option<Vec<i64>>,
    offloads: Option<bool>,
    mac_limit: Option<i64>,
    packed_rings: Option<bool>,
    in_order: Option<bool>,
    ingress_policing_rate: Option<i64>,
    ingress_policing_burst: Option<i64>,
    vni: Option<i64>,
    local_ip: Option<String>,
    remote_ips: Option<Vec<String>>,
    underlay: Option<String>,
}

// Lcore ids; DPDK's own limit (RTE_MAX_LCORE) is checked by the EAL.
const CORE: Range = 0..=1023;
const VLAN: Range = 1..=4094;
type Range = RangeInclusive<i64>;
type Res<T> = Result<T, ConfigError>;

/// Not serde_json::to_value: it turns nan into null, which would read as an
/// absent key. Floats and datetimes become values that no raw field accepts.
fn toml_to_json(v: toml::Value) -> Value {
    use toml::Value as T;
    match v {
        T::String(s) => Value::String(s),
        T::Integer(i) => i.into(),
        T::Float(f) => serde_json::Number::from_f64(f).map_or(f.to_string().into(), Value::Number),
        T::Boolean(b) => b.into(),
        T::Datetime(d) => json!({ "datetime": d.to_string() }),
        T::Array(a) => a.into_iter().map(toml_to_json).collect(),
        T::Table(t) => t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect(),
    }
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let cx = Ctx::new(&origin, "");
    let text = fs::read_to_string(path).map_err(|e| cx.err("", format!("cannot read: {e}")))?;
    parse(&text, path)
}

/// `origin` names the file in messages and derives the default `state_file`.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let o = origin.display().to_string();
    let top = Ctx::new(&o, "");
    let syntax = |e: toml::de::Error| top.err("", e.to_string().trim_end());
    let table: toml::Table = text.parse().map_err(syntax)?;
    let Value::Object(map) = toml_to_json(toml::Value::Table(table)) else {
        unreachable!("a TOML table becomes a JSON object")
    };
    let raw: RawTop = top.decode(&map)?;
    let cx = Ctx::new(&o, "switch");
    let switch = validate_switch(cx.decode(&raw.switch.unwrap_or_default())?, origin, &cx)?;
    let mut ports = Vec::new();
    for (i, map) in raw.port.unwrap_or_default().iter().enumerate() {
        let cx = Ctx::port(&o, &format!("port[{i}]"), map);
        let port = validate_port(map, &switch, &cx)?;
        push_unique(&mut ports, port, &cx)?;
    }
    check_links(&ports, &o)?;
    Ok(Config { switch, ports })
}

/// What one port says of another: a vxlan port's `underlay` is a `dpdk`
/// port, and no two vxlan ports on one underlay share a local IP and VNI.
fn check_links(ports: &[PortConfig], origin: &str) -> Res<()> {
    for (i, p) in ports.iter().enumerate() {
        let PortKind::Vxlan { underlay, vni, local_ip, .. } = &p.kind else { continue };
        let cx = Ctx::new(origin, format!("port[{i}] {:?}", p.name));
        match ports.iter().find(|u| u.name == *underlay) {
            Some(PortConfig { kind: PortKind::Dpdk { .. }, .. }) => {}
            Some(u) => return Err(cx.err("underlay", format!("port {:?} is of type {:?}, not \"dpdk\"", u.name, u.kind.name()))),
            None => return Err(cx.err("underlay", format!("no port named {underlay:?}"))),
        }
        let same = |o: &&PortConfig| matches!(&o.kind, PortKind::Vxlan { underlay: u, vni: v, local_ip: l, .. } if (u, v, l) == (underlay, vni, local_ip));
        if let Some(o) = ports[..i].iter().find(same) {
            return Err(cx.err("vni", format!("VNI {vni} on {local_ip} over {underlay:?} is also port {:?}'s", o.name)));
        }
    }
    Ok(())
}

fn validate_switch(raw: RawSwitch, origin: &Path, cx: &Ctx) -> Res<SwitchConfig> {
    let pmd = validate_pmd(&raw, cx)?;
    let main_core = cx.opt("main_core", raw.main_core, 0, CORE)?;
    let pmd_cores: Vec<u32> = cx.ints("pmd_cores", raw.pmd_cores.unwrap_or(vec![1]), CORE)?;
    if pmd_cores.is_empty() {
        return Err(cx.err("pmd_cores", "must list at least one core"));
    }
    // A core may be listed twice: two PMD threads then time-share it, which
    // halves each one's share but lets one CPU test multi-thread behaviour.
    if pmd_cores.contains(&main_core) {
        // A poll-mode thread never yields: the control thread would starve.
        return Err(cx.err("pmd_cores", format!("core {main_core} is also main_core")));
    }
    let socket_dir = cx.text("socket_dir", raw.socket_dir)?;
    let socket_dir = PathBuf::from(socket_dir.as_deref().unwrap_or("/run/vswitch"));
    if !socket_dir.is_absolute() {
        // Relative socket paths would otherwise depend on the daemon's cwd.
        let msg = format!("{} is not an absolute path", socket_dir.display());
        return Err(cx.err("socket_dir", msg));
    }
    let control_socket = cx.text("control_socket", raw.control_socket)?;
    let mut state_file = origin.as_os_str().to_owned();
    state_file.push(".state.json");
    let hugepages = [
        ("auto", Hugepages::Auto),
        ("on", Hugepages::On),
        ("off", Hugepages::Off),
    ];
    let openflow_socket = cx.text("openflow_socket", raw.openflow_socket)?.map_or_else(|| socket_dir.join("br0.mgmt"), PathBuf::from);
    let openflow_socket = socket_path(cx, "openflow_socket", openflow_socket)?;
    let controller = cx.text("controller", raw.controller)?;
    if let Some(Err(e)) = controller.as_deref().map(crate::openflow::conn::parse_target) {
        return Err(cx.err("controller", e));
    }
    Ok(SwitchConfig {
        pmd_cores,
        main_core,
        eal_args: raw.eal_args.unwrap_or_default(),
        hugepages: cx
            .choice("hugepages", raw.hugepages, &hugepages)?
            .unwrap_or(Hugepages::Auto),
        memory_mb: cx.opt("memory_mb", raw.memory_mb, 1024, 64..=1_048_576)?,
        control_socket: socket_path(cx, "control_socket", control_socket.unwrap_or(DEFAULT_CONTROL_SOCKET.into()).into())?,
        socket_dir,
        state_file: cx
            .text("state_file", raw.state_file)?
            .map_or(state_file.into(), Into::into),
        fdb_size: cx.opt("fdb_size", raw.fdb_size, 8192, 16..=1_048_576)?,
        fdb_aging_secs: cx.opt("fdb_aging_secs", raw.fdb_aging_secs, 300, 1..=1_000_000)?,
        vhost_retries: cx.opt("vhost_retries", raw.vhost_retries, 8, 0..=64)?,
        metrics: cx.text("metrics", raw.metrics)?.map(|a| listen_addr(cx, "metrics", &a)).transpose()?,
        openflow_socket,
        controller,
        pmd,
        zero_copy: raw.zero_copy.unwrap_or(true),
        zero_copy_min_bytes: cx.opt("zero_copy_min_bytes", raw.zero_copy_min_bytes, ZERO_COPY_MIN_BYTES, 0..=65535)?,
        zero_copy_in_flight: cx.opt("zero_copy_in_flight", raw.zero_copy_in_flight, 0, 0..=32768)?,
    })
}

/// The default `zero_copy_min_bytes` (README, "Zero copy to NICs": measured).
pub const ZERO_COPY_MIN_BYTES: u32 = 1500;

/// An IP literal and a port (0: any free one): no name to resolve, so the
/// address bound is the one written.
fn listen_addr(cx: &Ctx, key: &str, text: &str) -> Res<SocketAddr> {
    text.parse().map_err(|_| cx.err(key, format!("{text:?} is not an address and port such as \"127.0.0.1:9478\" or \"[::1]:9478\"")))
}

fn push_unique(ports: &mut Vec<PortConfig>, port: PortConfig, cx: &Ctx) -> Res<()> {
    for other in ports.iter() {
        if other.name == port.name {
            return Err(cx.err("name", format!("duplicate port name {:?}", port.name)));
        }
        if let Some(path) = port.kind.socket().filter(|p| Some(*p) == other.kind.socket()) {
            let msg = format!(
                "socket {} is also used by port {:?}",
                path.display(),
                other.name
            );
            return Err(cx.err("path", msg));
        }
    }
    ports.push(port);
    Ok(())
}

impl Config {
    /// Applies deletions (names no longer in the file are ignored: the file
    /// may have been edited since), then additions, validated anew since the
    /// `[switch]` table may have changed since they were saved.
    pub fn with_state(mut self, state: &State) -> Result<Config, ConfigError> {
        self.ports.retain(|p| !state.deleted.contains(&p.name));
        let origin = self.switch.state_file.display().to_string();
        for (i, port) in state.added.iter().enumerate() {
            let label = format!("added[{i}]");
            let in_state = |e: ConfigError| ConfigError {
                origin: origin.clone(),
                ..e
            };
            let port =
                port_from_json(&port_to_json(port), &self.switch, &label).map_err(in_state)?;
            let cx = Ctx::new(&origin, format!("{label} {:?}", port.name));
            push_unique(&mut self.ports, port, &cx)?;
        }
        check_links(&self.ports, &origin)?;
        Ok(self)
    }

    /// Re-checks every port, alone and against the ones before it, with the
    /// rules `parse` applies; errors name `port[i] "name"` and no file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut ports = Vec::new();
        for (i, port) in self.ports.iter().enumerate() {
            let cx = Ctx::new("", format!("port[{i}] {:?}", port.name));
            let label = format!("port[{i}]");
            let port = port_from_json(&port_to_json(port), &self.switch, &label)?;
            push_unique(&mut ports, port, &cx)?;
        }
        check_links(&ports, "")
    }

    /// Adds a port from `port_from_json` unless its name or socket is taken.
    pub fn add_port(&mut self, port: PortConfig) -> Result<(), ConfigError> {
        let cx = Ctx::new("", format!("port {:?}", port.name));
        push_unique(&mut self.ports, port, &cx)
    }
}

/// A `port add` request: the fields of a `[[port]]` table as a JSON object.
/// Checks the port alone; `Config::add_port` checks it against the others.
pub fn port_from_json(
    value: &Value,
    switch: &SwitchConfig,
    index_label: &str,
) -> Result<PortConfig, ConfigError> {
    let Value::Object(map) = value else {
        return Err(Ctx::new("", index_label).err("", "expected a JSON object"));
    };
    let cx = Ctx::port("", index_label, map);
    validate_port(map, switch, &cx)
}

mod ctx;
mod pmd;
mod port;
mod state;
pub use pmd::{AutoLb, PmdConfig};
pub use state::{load_state, save_state, State};
use ctx::Ctx;
use pmd::validate_pmd;
use port::validate_port;
use state::port_to_json;

#[cfg(test)]
mod tests;
