//! A scrape: the answers to `show ports`, `show pmd`, `show copies`,
//! `show mempool`, `show fdb` and `show pmd-rxq`, in the Prometheus text format (0.0.4),
//! written by the prometheus-client crate.
//!
//! The counters are the `show` figures, so `vswitchctl stats clear` (or a
//! port deleted and added again) starts them from zero, which Prometheus
//! takes as a counter reset, as after a restart. Every drop reason is
//! exported for every port, zero or not, so that `rate()` and `increase()`
//! see a reason's first drop.
use std::collections::HashMap;
use std::fmt;

use dataplane::counters::{DropReason, ZeroCopy};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::protocol::{Command, CopiesInfo, FdbInfo, MempoolInfo, PathCopies, PmdInfo, PmdRxqInfo, PortInfo};

pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// What a scrape asks the control loop, in the order `Snapshot::decode`
/// takes the answers.
pub fn commands() -> [Command; 6] {
    [Command::ShowPorts, Command::ShowPmd, Command::ShowCopies, Command::ShowMempool, Command::ShowFdb, Command::ShowPmdRxq]
}

#[derive(Debug)]
pub struct Snapshot {
    pub ports: Vec<PortInfo>,
    pub pmds: Vec<PmdInfo>,
    pub copies: CopiesInfo,
    pub mempool: MempoolInfo,
    pub fdb: Vec<FdbInfo>,
    pub rxqs: Vec<PmdRxqInfo>,
}

type PortCounter = (&'static str, &'static str, fn(&PortInfo) -> u64);

const PORT_COUNTERS: [PortCounter; 7] = [
    ("vswitch_port_rx_packets", "Packets received on the port.", |p| p.rx_packets),
    ("vswitch_port_rx_bytes", "Bytes received on the port.", |p| p.rx_bytes),
    ("vswitch_port_tx_packets", "Packets sent on the port (a segment the switch cut counts as the frames it became).", |p| p.tx_packets),
    ("vswitch_port_tx_bytes", "Bytes sent on the port.", |p| p.tx_bytes),
    ("vswitch_port_forwarded_packets", "Received packets forwarded to one port (unicast).", |p| p.forwarded),
    ("vswitch_port_flooded_packets", "Received packets flooded to the VLAN.", |p| p.flooded),
    ("vswitch_port_unlearned_packets", "Received packets forwarded whose source MAC the table could not take.", |p| p.unlearned),
];

type PmdCounter = (&'static str, &'static str, fn(&PmdInfo) -> u64);

const PMD_COUNTERS: [PmdCounter; 9] = [
    ("vswitch_pmd_packets", "Packets the PMD thread received.", |p| p.packets),
    ("vswitch_pmd_bursts", "Non-empty receive bursts of the PMD thread.", |p| p.bursts),
    ("vswitch_pmd_busy_cycles", "TSC cycles the PMD thread spent in iterations that received something.", |p| p.busy_cycles),
    ("vswitch_pmd_idle_cycles", "TSC cycles the PMD thread spent polling queues that had nothing.", |p| p.idle_cycles),
    ("vswitch_pmd_iterations", "Poll loop iterations of the PMD thread.", |p| p.iterations),
    ("vswitch_pmd_sleep_cycles", "TSC cycles the PMD thread spent asleep when idle (pmd_sleep_max_us).", |p| p.sleep_cycles),
    ("vswitch_pmd_sleeps", "Poll loop iterations of the PMD thread that ended in a sleep.", |p| p.sleeps),
    ("vswitch_pmd_kick_sleeps", "Sleeps of the PMD thread until a guest's kick (every queue it polls a copy-once guest's).", |p| p.kick_sleeps),
    ("vswitch_pmd_kicked", "Sleeps until a guest's kick that a kick ended (not the timeout or a new plan).", |p| p.kicked),
];

impl Snapshot {
    /// From the `result`s of `commands()`, in order.
    pub fn decode(results: [Value; 6]) -> Result<Snapshot, String> {
        fn de<T: DeserializeOwned>(what: &str, v: Value) -> Result<T, String> {
            serde_json::from_value(v).map_err(|e| format!("{what}: {e}"))
        }
        let [ports, pmds, copies, mempool, fdb, rxqs] = results;
        Ok(Snapshot {
            ports: de("show ports", ports)?,
            pmds: de("show pmd", pmds)?,
            copies: de("show copies", copies)?,
            mempool: de("show mempool", mempool)?,
            fdb: de("show fdb", fdb)?,
            rxqs: de("show pmd-rxq", rxqs)?,
        })
    }

    pub fn render(self) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let ports = &self.ports;
        let port = |p: &PortInfo| [("port", p.name.clone())];
        for (name, help, value) in PORT_COUNTERS {
            counters(&mut enc, name, help, ports.iter().map(|p| (port(p), value(p))))?;
        }
        let drops = ports.iter().flat_map(|p| {
            DropReason::ALL.iter().map(|r| ([("port", p.name.as_str()), ("reason", r.name())], p.drops.get(r.name()).copied().unwrap_or(0)))
        });
        counters(&mut enc, "vswitch_port_dropped_packets", "Packets dropped, by reason (tx-side reasons count an output's copies).", drops)?;
        gauges(&mut enc, "vswitch_port_mtu_bytes", "The port's MTU.", ports.iter().map(|p| (port(p), u32::from(p.mtu))))?;
        let mut macs: HashMap<&str, u64> = HashMap::new();
        for e in &self.fdb {
            *macs.entry(&e.port).or_default() += 1;
        }
        let macs = ports.iter().map(|p| (port(p), macs.get(p.name.as_str()).copied().unwrap_or(0)));
        gauges(&mut enc, "vswitch_port_mac_entries", "MAC table entries learned on the port.", macs)?;

        let mut info = enc.encode_descriptor("vswitch_port", "A port: its type, state (up, down, waiting) and VLAN mode.", None, MetricType::Info)?;
        for p in ports {
            info.encode_info(&[("port", &p.name), ("type", &p.kind), ("state", &p.state), ("vlan", &p.vlan)])?;
        }
        let mut info = enc.encode_descriptor("vswitch_port_feature", "A feature in use: a guest's negotiated virtio features, a NIC's transmit offloads.", None, MetricType::Info)?;
        for p in ports {
            for f in &p.features {
                info.encode_info(&[("port", &p.name), ("feature", f)])?;
            }
        }

        let paths = &self.copies.paths;
        let path = |p: &PathCopies| [("path", p.path.clone())];
        counters(&mut enc, "vswitch_path_packets", "Packets by path (vm-vm, vm-nic, nic-vm, nic-nic, flood).", paths.iter().map(|p| (path(p), p.packets)))?;
        counters(&mut enc, "vswitch_path_payload_copies", "Payload copies made for the path's packets.", paths.iter().map(|p| (path(p), p.payload_copies)))?;
        counters(&mut enc, "vswitch_path_copied_bytes", "Payload bytes copied for the path's packets.", paths.iter().map(|p| (path(p), p.bytes_copied)))?;
        let zc = ZeroCopy::ALL.iter().map(|z| ([("outcome", z.name())], self.copies.zero_copy.get(z.name()).copied().unwrap_or(0)));
        counters(&mut enc, "vswitch_zero_copy_frames", "Copy-once guests' frames bound for NICs: lent (no payload copy), or copied and why.", zc)?;
        gauges(&mut enc, "vswitch_port_lent_to_nics_buffers", "A copy-once guest's transmit buffers lent to NICs and not yet back.", ports.iter().map(|p| (port(p), p.lent_to_nics)))?;

        let pmd = |p: &PmdInfo| [("pmd", p.index.to_string()), ("core", p.core.to_string())];
        for (name, help, value) in PMD_COUNTERS {
            counters(&mut enc, name, help, self.pmds.iter().map(|p| (pmd(p), value(p))))?;
        }

        let rxqs = self.rxqs.iter().flat_map(|p| p.rxqs.iter().map(move |q| ([("port", q.port.clone()), ("queue", q.queue.to_string()), ("pmd", p.index.to_string())], q.usage_pct / 100.0)));
        gauges(&mut enc, "vswitch_rxq_usage_ratio", "The rx queue's share of its PMD thread's cycles over the last minute (show pmd-rxq).", rxqs)?;

        let none: [(&str, &str); 0] = [];
        gauges(&mut enc, "vswitch_mempool_size_mbufs", "Mbufs in the switch's pool.", [(none, self.mempool.size)])?;
        gauges(&mut enc, "vswitch_mempool_in_use_mbufs", "Mbufs of the pool in use (cached ones count as free).", [(none, self.mempool.in_use)])?;
        gauges(&mut enc, "vswitch_mac_table_entries", "Live entries in the MAC table.", [(none, self.fdb.len() as u64)])
    }
}

fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in series {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `name` without `_total`: the encoder appends it.
fn counters<L: EncodeLabelSet>(enc: &mut DescriptorEncoder, name: &str, help: &str, series: impl IntoIterator<Item = (L, u64)>) -> fmt::Result {
    family(enc, name, help, MetricType::Counter, series.into_iter().map(|(l, v)| (l, ConstCounter::new(v))))
}

fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue + fmt::Debug>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, series.into_iter().map(|(l, v)| (l, ConstGauge::new(v))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RxqInfo;

    fn snapshot() -> Snapshot {
        let vm1 = PortInfo {
            name: "vm1".into(),
            kind: "vhost-user".into(),
            state: "up".into(),
            vlan: "access 10".into(),
            mtu: 1500,
            rx_packets: 10,
            rx_bytes: 640,
            tx_packets: 3,
            tx_bytes: 192,
            forwarded: 7,
            flooded: 2,
            drops: [("runt".to_string(), 1)].into(),
            features: vec!["mrg_rxbuf".into(), "version_1".into()],
            ..Default::default()
        };
        // A name that needs escaping in a label value.
        let odd = PortInfo { name: "a\"b\\c".into(), kind: "dpdk".into(), state: "down".into(), vlan: "trunk 10,20".into(), ..Default::default() };
        let fdb = |mac: &str, port: &str| FdbInfo { vlan: 10, mac: mac.into(), port: port.into(), age_secs: 1, remote: None };
        Snapshot {
            ports: vec![vm1, odd],
            pmds: vec![PmdInfo { index: 0, core: 3, lcore: 1, packets: 12, busy_cycles: 900, idle_cycles: 100, sleep_cycles: 50, ..Default::default() }],
            copies: CopiesInfo {
                paths: vec![PathCopies { path: "vm-vm".into(), packets: 7, payload_copies: 14, bytes_copied: 896 }],
                zero_copy: [("lent".to_string(), 5), ("small".to_string(), 2)].into(),
            },
            mempool: MempoolInfo { size: 4095, free: 4000, in_use: 95 },
            fdb: vec![fdb("02:00:00:00:00:01", "vm1"), fdb("02:00:00:00:00:02", "vm1")],
            rxqs: vec![PmdRxqInfo {
                index: 0,
                core: 3,
                rxqs: vec![RxqInfo { port: "vm1".into(), queue: 1, pinned: false, cycles: 900, usage_pct: 25.0 }],
            }],
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn every_figure_is_a_sample_named_by_convention() {
        let text = snapshot().render().unwrap();
        let l = lines(&text);
        for want in [
            "# TYPE vswitch_port_rx_packets_total counter",
            r#"vswitch_port_rx_packets_total{port="vm1"} 10"#,
            r#"vswitch_port_rx_bytes_total{port="vm1"} 640"#,
            r#"vswitch_port_tx_packets_total{port="vm1"} 3"#,
            r#"vswitch_port_tx_bytes_total{port="vm1"} 192"#,
            r#"vswitch_port_forwarded_packets_total{port="vm1"} 7"#,
            r#"vswitch_port_flooded_packets_total{port="vm1"} 2"#,
            r#"vswitch_port_dropped_packets_total{port="vm1",reason="runt"} 1"#,
            r#"vswitch_port_dropped_packets_total{port="vm1",reason="tx_full"} 0"#,
            r#"vswitch_port_mtu_bytes{port="vm1"} 1500"#,
            r#"vswitch_port_mac_entries{port="vm1"} 2"#,
            "# TYPE vswitch_port_info gauge",
            r#"vswitch_port_info{port="vm1",type="vhost-user",state="up",vlan="access 10"} 1"#,
            r#"vswitch_port_feature_info{port="vm1",feature="mrg_rxbuf"} 1"#,
            r#"vswitch_port_feature_info{port="vm1",feature="version_1"} 1"#,
            r#"vswitch_path_packets_total{path="vm-vm"} 7"#,
            r#"vswitch_path_payload_copies_total{path="vm-vm"} 14"#,
            r#"vswitch_path_copied_bytes_total{path="vm-vm"} 896"#,
            r#"vswitch_zero_copy_frames_total{outcome="lent"} 5"#,
            r#"vswitch_zero_copy_frames_total{outcome="in_flight_limit"} 0"#,
            r#"vswitch_port_lent_to_nics_buffers{port="vm1"} 0"#,
            r#"vswitch_pmd_busy_cycles_total{pmd="0",core="3"} 900"#,
            r#"vswitch_pmd_idle_cycles_total{pmd="0",core="3"} 100"#,
            r#"vswitch_pmd_packets_total{pmd="0",core="3"} 12"#,
            r#"vswitch_pmd_sleep_cycles_total{pmd="0",core="3"} 50"#,
            "# TYPE vswitch_mempool_in_use_mbufs gauge",
            "vswitch_mempool_in_use_mbufs 95",
            "vswitch_mempool_size_mbufs 4095",
            "vswitch_mac_table_entries 2",
            r#"vswitch_rxq_usage_ratio{port="vm1",queue="1",pmd="0"} 0.25"#,
        ] {
            assert!(l.contains(&want), "missing {want:?} in:\n{text}");
        }
        let reasons = l.iter().filter(|s| s.starts_with(r#"vswitch_port_dropped_packets_total{port="vm1""#)).count();
        assert_eq!(reasons, DropReason::COUNT, "every reason, zero or not");
    }

    #[test]
    fn label_values_are_escaped() {
        let text = snapshot().render().unwrap();
        assert!(lines(&text).contains(&r#"vswitch_port_rx_packets_total{port="a\"b\\c"} 0"#), "{text}");
        assert!(lines(&text).contains(&r#"vswitch_port_mac_entries{port="a\"b\\c"} 0"#), "{text}");
    }

    #[test]
    fn each_family_is_described_once() {
        let text = snapshot().render().unwrap();
        let types: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
        let mut unique = types.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(types.len(), unique.len(), "{types:?}");
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(types.contains(&name), "sample {l:?} has no TYPE line");
        }
    }

    #[test]
    fn decodes_what_the_show_commands_answer() {
        let s = snapshot();
        use serde_json::to_value as j;
        let results = [j(&s.ports).unwrap(), j(&s.pmds).unwrap(), j(&s.copies).unwrap(), j(&s.mempool).unwrap(), j(&s.fdb).unwrap(), j(&s.rxqs).unwrap()];
        let back = Snapshot::decode(results).unwrap();
        assert_eq!((back.ports, back.pmds, back.copies, back.mempool, back.fdb, back.rxqs), (s.ports, s.pmds, s.copies, s.mempool, s.fdb, s.rxqs));
        let mut bad = [Value::Null, Value::Null, Value::Null, Value::Null, Value::Null, Value::Null];
        bad[0] = serde_json::json!([{ "name": 1 }]);
        assert!(Snapshot::decode(bad).unwrap_err().starts_with("show ports: "));
    }
}
