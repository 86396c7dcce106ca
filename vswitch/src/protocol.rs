//! The control socket's protocol: one JSON object per line each way.
//!
//! A request names a command and carries the protocol version; the reply
//! carries the same version, `ok`, and either `result` or `error`. A daemon
//! refuses a request of another version with an error that names both, so a
//! mismatched vswitchctl fails clearly instead of misreading fields.
use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    ShowPorts,
    ShowFdb,
    ShowPmd,
    ShowPmdRxq,
    ShowMempool,
    /// Packets, payload copies and bytes copied per path.
    ShowCopies,
    /// The OpenFlow flow table with its counters.
    ShowFlows,
    /// Fields as in a `[[port]]` table of the config file.
    PortAdd { port: serde_json::Value },
    PortDel { name: String },
    FdbFlush,
    StatsClear,
    /// Assigns the rx queues to PMD threads by their measured cycles, now.
    PmdRebalance,
    /// Starts a packet capture on a port; after the answer, the connection
    /// carries the capture (`capture`), until `count` frames or
    /// `timeout_secs` if given.
    CaptureStart {
        port: String,
        direction: CaptureDirection,
        snaplen: u32,
        #[serde(default)]
        count: Option<u64>,
        #[serde(default)]
        timeout_secs: Option<u64>,
        #[serde(default)]
        format: CaptureFormat,
    },
    /// Stops a capture (its writer does, at its end).
    CaptureStop { id: u64 },
}

/// Which of a port's frames a capture takes: received on it, sent to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureDirection {
    Rx,
    Tx,
    Both,
}

/// The file a capture becomes: pcap (microsecond timestamps, as tcpdump
/// writes), or pcapng, which also names the port (its interface) and says
/// of each frame whether the port received or was sent it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    #[default]
    Pcap,
    Pcapng,
}

/// A capture started: what `CaptureStop` takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStarted {
    pub id: u64,
    pub snaplen: u32,
    /// The format it writes: a daemon older than pcapng says nothing (pcap).
    #[serde(default)]
    pub format: CaptureFormat,
}

/// A capture stopped: frames the threads took, and those their rings had
/// no room for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStopped {
    pub taken: u64,
    pub dropped: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub command: Command,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub result: serde_json::Value,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response { version: VERSION, ok: true, error: None, result }
    }

    pub fn err(msg: impl Into<String>) -> Response {
        Response { version: VERSION, ok: false, error: Some(msg.into()), result: serde_json::Value::Null }
    }
}

/// One port as `show ports` reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortInfo {
    pub name: String,
    pub slot: u16,
    #[serde(rename = "type")]
    pub kind: String,
    /// "up", "down", or for a vhost-user port without a guest "waiting".
    pub state: String,
    pub detail: String,
    pub vlan: String,
    pub mtu: u16,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub forwarded: u64,
    pub flooded: u64,
    /// Frames forwarded whose source MAC the table could not take (full,
    /// or the port at its `mac_limit`).
    #[serde(default)]
    pub unlearned: u64,
    /// Non-zero drop counters by reason name.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// A guest's negotiated virtio features by name; a NIC's transmit
    /// offloads in use.
    #[serde(default)]
    pub features: Vec<String>,
    /// Ingress policing: kbit/s (0: none), and the bucket in kbit.
    #[serde(default)]
    pub ingress_policing_rate: u32,
    #[serde(default)]
    pub ingress_policing_burst: u32,
    /// A copy-once guest's transmit chains lent to NICs and not yet back.
    #[serde(default)]
    pub lent_to_nics: u64,
    /// PMD cycles spent on the bursts received from it, forwarding
    /// included (each poll's busy cycles, by the rx queue polled), and
    /// how many bursts (polls that received something).
    #[serde(default)]
    pub busy_cycles: u64,
    #[serde(default)]
    pub rx_bursts: u64,
    /// The packets of the whole bursts (32 frames) among those, and their
    /// cycles: a frame's cost where a slower guest's smaller bursts do not
    /// count.
    #[serde(default)]
    pub full_burst_packets: u64,
    #[serde(default)]
    pub full_burst_cycles: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FdbInfo {
    pub vlan: u16,
    pub mac: String,
    pub port: String,
    pub age_secs: u32,
    /// On a vxlan port: the remote endpoint the station is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PmdInfo {
    pub index: usize,
    pub core: u32,
    pub lcore: u32,
    pub packets: u64,
    pub bursts: u64,
    pub avg_burst: f64,
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub busy_pct: f64,
    pub cycles_per_packet: f64,
    pub iterations: u64,
    /// Time asleep when idle (`pmd_sleep_max_us`): TSC cycles, microseconds,
    /// and percent of the thread's time (busy, idle and asleep).
    #[serde(default)]
    pub sleep_cycles: u64,
    #[serde(default)]
    pub sleep_us: u64,
    #[serde(default)]
    pub sleep_pct: f64,
    /// Iterations that ended in a sleep; of those, sleeps until a guest's
    /// kick (or the housekeeping timeout) rather than the clock, and the
    /// ones a kick ended.
    #[serde(default)]
    pub sleeps: u64,
    #[serde(default)]
    pub kick_sleeps: u64,
    #[serde(default)]
    pub kicked: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RxqInfo {
    pub port: String,
    pub queue: u16,
    /// Pinned to its thread (`rxq_pmd`): no rebalance moves it.
    #[serde(default)]
    pub pinned: bool,
    /// Its busy cycles over the measuring window (about a minute), and
    /// their share of its thread's cycles in that window.
    #[serde(default)]
    pub cycles: u64,
    #[serde(default)]
    pub usage_pct: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PmdRxqInfo {
    pub index: usize,
    pub core: u32,
    pub rxqs: Vec<RxqInfo>,
}

/// An rx queue a rebalance moved (or would have).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RxqMove {
    pub port: String,
    pub queue: u16,
    pub from: usize,
    pub to: usize,
}

/// What `pmd rebalance` did: the threads' loads (percent of the window)
/// as a variance before and after, and the moves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RebalanceInfo {
    pub applied: bool,
    pub moved: Vec<RxqMove>,
    pub variance_before: f64,
    pub variance_after: f64,
    pub improvement_pct: f64,
}

/// One path's copy accounting (`show copies`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCopies {
    pub path: String,
    pub packets: u64,
    pub payload_copies: u64,
    pub bytes_copied: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiesInfo {
    pub paths: Vec<PathCopies>,
    /// Copy-once guests' frames bound for NICs: "lent" (no payload copy),
    /// or copied and why ("small", "in_flight_limit", "not_dma_mapped",
    /// "other").
    #[serde(default)]
    pub zero_copy: std::collections::BTreeMap<String, u64>,
}

/// The switch's mbuf pool; cached mbufs count as free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolInfo {
    pub size: u32,
    pub free: u32,
    pub in_use: u32,
}

/// One OpenFlow flow as `show flows` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowInfo {
    pub priority: u16,
    pub cookie: u64,
    /// In `ovs-ofctl`'s words (empty: every packet).
    #[serde(rename = "match")]
    pub matches: String,
    pub actions: String,
    pub packets: u64,
    pub bytes: u64,
    pub duration_secs: u32,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
}

/// `show flows`: the flow table, highest priority first, and the
/// controllers connected.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowsInfo {
    pub flows: Vec<FlowInfo>,
    pub controllers: Vec<String>,
    /// Frames sent to the controllers, and those dropped on the way (a
    /// PMD thread's ring to the control thread full).
    pub packet_ins: u64,
    pub packet_in_dropped: u64,
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r = Request { version: VERSION, command: Command::PortDel { name: "vm1".into() } };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"version":1,"command":"port-del","name":"vm1"}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let show: Request = serde_json::from_str(r#"{"version":1,"command":"show-pmd-rxq"}"#).unwrap();
        assert_eq!(show.command, Command::ShowPmdRxq);
        assert!(serde_json::from_str::<Request>(r#"{"version":1,"command":"reboot"}"#).is_err());
    }

    #[test]
    fn mac_format() {
        assert_eq!(format_mac(&[0x52, 0x54, 0, 0xab, 1, 2]), "52:54:00:ab:01:02");
    }
}
