//! `GET /metrics` of a running vswitchd, read by a Prometheus text-format
//! parser, against `vswitchctl show ports --json` after a stream of known
//! size: a copy-once and an rte_vhost port, played by net_virtio_user VMs;
//! and the PMD thread's cycle counts, which the busy shares rest on.
mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command as Cmd;
use std::time::Duration;

use common::*;
use prometheus_parse::{Sample, Scrape, Value};
use testbed::{wait_until, FilePrefix, Proc};
use vswitch::protocol::{Command, CopiesInfo, FdbInfo, PmdInfo, PortInfo};

const PORTS: &str = r#"
[[port]]
name = "vm1"
type = "vhost-user"
mode = "server"
path = "vm1.sock"
datapath = "copy-once"

[[port]]
name = "vm2"
type = "vhost-user"
mode = "server"
path = "vm2.sock"
datapath = "rte_vhost"
"#;

/// The address vswitchd said it serves metrics on (port 0 in the config).
fn metrics_addr(sw: &Switchd) -> String {
    let out = sw.proc.output();
    let line = out.lines().find_map(|l| l.strip_prefix("vswitchd: metrics on http://")).expect("metrics address printed");
    line.trim_end_matches("/metrics").to_string()
}

/// One HTTP request; the status line and the body.
fn http(addr: &str, request: &str) -> (String, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn scrape(addr: &str) -> Scrape {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: vswitchd\r\nAccept: text/plain\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("a Prometheus text-format scrape")
}

fn samples<'a>(s: &'a Scrape, metric: &'a str) -> impl Iterator<Item = &'a Sample> {
    s.samples.iter().filter(move |x| x.metric == metric)
}

/// The one sample of `metric` with these labels.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> u64 {
    let mut found = samples(s, metric).filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)));
    let x = found.next().unwrap_or_else(|| panic!("no {metric}{labels:?}"));
    assert!(found.next().is_none(), "{metric}{labels:?} twice");
    let v = match x.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        _ => panic!("{metric}: {:?}", x.value),
    };
    assert!(v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53), "{metric}: {v}");
    v as u64
}

/// `vswitchctl show ports --json`, as an operator would run it.
fn show_ports(sw: &Switchd) -> Vec<PortInfo> {
    let out = Cmd::new(env!("CARGO_BIN_EXE_vswitchctl")).arg("--socket").arg(&sw.ctl).args(["--json", "show", "ports"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_scrape_agrees_with_show_ports() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), "metrics = \"127.0.0.1:0\"", PORTS);
    let addr = metrics_addr(&sw);
    let mut vms: Vec<Vm> = ["vm1", "vm2"].iter().map(|n| Vm::connect(n, &dir.path().join(format!("{n}.sock")), false, 1500)).collect();
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    sw.ctl(Command::StatsClear);

    // vm1 to an unknown MAC: flooded to vm2. vm2 back to vm1, now learned:
    // forwarded. Sizes from a runt's neighbour to a full frame.
    let sizes = [60usize, 61, 128, 512, 1000, 1514];
    let stream = |n: usize, dst, src| -> Vec<Vec<u8>> { (0..n).map(|i| frame(dst, src, None, sizes[i % sizes.len()], i as u32)).collect() };
    let (there, back) = (stream(1000, mac(2), mac(1)), stream(301, mac(1), mac(2)));
    let bytes = |s: &[Vec<u8>]| s.iter().map(|f| f.len() as u64).sum::<u64>();
    for chunk in there.chunks(100) {
        vms[0].send(chunk);
        assert_eq!(vms[1].recv(chunk.len()).len(), chunk.len());
    }
    vms[1].send(&back);
    assert_eq!(vms[0].recv(back.len()).len(), back.len());
    let want = |p: &PortInfo| match p.name.as_str() {
        "vm1" => (there.len() as u64, bytes(&there), back.len() as u64, bytes(&back)),
        _ => (back.len() as u64, bytes(&back), there.len() as u64, bytes(&there)),
    };
    sw.wait_ports("the stream counted", |ps| ps.iter().all(|p| (p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes) == want(p)));

    let s = scrape(&addr);
    let ports = show_ports(&sw);
    assert_eq!(ports.len(), 2);
    for p in &ports {
        let l = [("port", p.name.as_str())];
        let scraped = (
            value(&s, "vswitch_port_rx_packets_total", &l),
            value(&s, "vswitch_port_rx_bytes_total", &l),
            value(&s, "vswitch_port_tx_packets_total", &l),
            value(&s, "vswitch_port_tx_bytes_total", &l),
        );
        assert_eq!(scraped, (p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes), "{}", p.name);
        assert_eq!(scraped, want(p), "{}: the stream sent", p.name);
        assert_eq!(value(&s, "vswitch_port_forwarded_packets_total", &l), p.forwarded);
        assert_eq!(value(&s, "vswitch_port_flooded_packets_total", &l), p.flooded);
        for r in dataplane::counters::DropReason::ALL {
            let drops = value(&s, "vswitch_port_dropped_packets_total", &[("port", &p.name), ("reason", r.name())]);
            assert_eq!(drops, p.drops.get(r.name()).copied().unwrap_or(0), "{} {}", p.name, r.name());
        }
        let features: BTreeSet<&str> = samples(&s, "vswitch_port_feature_info").filter(|x| x.labels.get("port") == Some(p.name.as_str())).filter_map(|x| x.labels.get("feature")).collect();
        assert_eq!(features, p.features.iter().map(String::as_str).collect(), "{}", p.name);
        assert!(features.contains("version_1"), "{features:?}");
        assert_eq!(value(&s, "vswitch_port_info", &[("port", &p.name), ("type", &p.kind), ("state", "up")]), 1);
    }
    assert_eq!((ports[0].flooded, ports[1].forwarded), (there.len() as u64, back.len() as u64));

    // The rest agrees with its own `show`.
    let pmds: Vec<PmdInfo> = serde_json::from_value(sw.ctl(Command::ShowPmd).result).unwrap();
    let pmd = [("pmd", "0"), ("core", "1")];
    assert_eq!(value(&s, "vswitch_pmd_packets_total", &pmd), pmds[0].packets);
    assert_eq!(pmds[0].packets, (there.len() + back.len()) as u64);
    assert!(value(&s, "vswitch_pmd_busy_cycles_total", &pmd) > 0 && value(&s, "vswitch_pmd_idle_cycles_total", &pmd) > 0);
    let copies: CopiesInfo = serde_json::from_value(sw.ctl(Command::ShowCopies).result).unwrap();
    for c in &copies.paths {
        assert_eq!(value(&s, "vswitch_path_packets_total", &[("path", &c.path)]), c.packets, "{}", c.path);
        assert_eq!(value(&s, "vswitch_path_payload_copies_total", &[("path", &c.path)]), c.payload_copies, "{}", c.path);
    }
    let fdb: Vec<FdbInfo> = serde_json::from_value(sw.ctl(Command::ShowFdb).result).unwrap();
    assert_eq!(value(&s, "vswitch_mac_table_entries", &[]), fdb.len() as u64);
    assert_eq!(value(&s, "vswitch_port_mac_entries", &[("port", "vm1")]), 1);
    assert!(value(&s, "vswitch_mempool_in_use_mbufs", &[]) < value(&s, "vswitch_mempool_size_mbufs", &[]));

    let (status, _) = http(&addr, "GET /nope HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(&addr, "POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

/// Every cycle of the polling loop goes to one poll, busy or idle (or to a
/// sleep): over a window they add up to the time stamps' own count. Time
/// stamps taken around each poll left the loop's work between polls out
/// (a third of an idle thread's cycles here), which `show pmd`'s busy share
/// and the rebalancer's loads did not see.
#[test]
fn regression_pmd_cycles_count_the_whole_loop() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), "", PORTS);
    let _vms: Vec<Vm> = ["vm1", "vm2"].iter().map(|n| Vm::connect(n, &dir.path().join(format!("{n}.sock")), false, 1500)).collect();
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let show_pmd = || serde_json::from_value::<Vec<PmdInfo>>(sw.ctl(Command::ShowPmd).result).unwrap().remove(0);
    let counted = |p: &PmdInfo| p.busy_cycles + p.idle_cycles + p.sleep_cycles;
    let (first, t0) = (show_pmd(), pmd_bridge::cycles::tsc());
    let last = wait_until(DEADLINE, "a million iterations", || Some(show_pmd()).filter(|p| p.iterations >= first.iterations + 1_000_000)).unwrap();
    let (wall, counted) = (pmd_bridge::cycles::tsc() - t0, counted(&last) - counted(&first));
    assert!((0.95..1.05).contains(&(counted as f64 / wall as f64)), "{counted} cycles counted in {wall}");
}

/// Starts vswitchd with `metrics` and waits for it to give up; its output.
fn refused(metrics: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let prefix = FilePrefix::new("vswitchd");
    let config = dir.path().join("switch.toml");
    let text = format!(
        "[switch]\npmd_cores = [1]\nhugepages = \"off\"\neal_args = [\"--file-prefix\", \"{}\", \"--no-shconf\"]\n\
         control_socket = \"{}\"\nsocket_dir = \"{}\"\nmetrics = \"{metrics}\"\n",
        prefix.as_str(),
        dir.path().join("ctl.sock").display(),
        dir.path().display()
    );
    std::fs::write(&config, text).unwrap();
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_vswitchd"));
    cmd.arg("--config").arg(&config);
    let mut proc = Proc::spawn("vswitchd", cmd).unwrap();
    let status = wait_until(DEADLINE, "vswitchd to give up", || proc.try_wait()).unwrap();
    assert!(!status.success(), "{}", proc.output());
    // Its output is read by threads of its own: wait for the last line.
    wait_until(Duration::from_secs(5), "its message", || proc.output().contains("vswitchd: ").then_some(())).unwrap();
    assert!(!proc.output().contains("EAL"), "refused before DPDK starts: {}", proc.output());
    proc.output()
}

#[test]
fn a_bad_address_or_a_port_in_use_is_refused_at_start() {
    let out = refused("localhost:9478");
    assert!(out.contains("switch.metrics: \"localhost:9478\" is not an address and port"), "{out}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = refused(&addr.to_string());
    assert!(out.contains(&format!("vswitchd: metrics: cannot listen on {addr}: Address already in use")), "{out}");
}
