//! vswitchctl: shows and changes a running vswitchd through its control socket.
#![forbid(unsafe_code)]
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use vswitch::ctl_server::request;
use dataplane::capture::MAX_SNAPLEN;
use dataplane::police::DEFAULT_BURST_KBIT;
use pmd_bridge::BURST;
use vswitch::protocol::{CaptureDirection, CaptureFormat, Command, CopiesInfo, FdbInfo, FlowsInfo, MempoolInfo, PmdInfo, PmdRxqInfo, PortInfo, RebalanceInfo};

#[derive(Parser)]
#[command(version, about = "Control a running vswitchd")]
struct Args {
    /// vswitchd's control socket.
    #[arg(long, env = "VSWITCH_CTL", default_value = vswitch::config::DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show ports, the MAC table, PMD threads, the rx queue placement, or
    /// the OpenFlow flows.
    Show {
        #[arg(value_parser = ["ports", "fdb", "pmd", "pmd-rxq", "mempool", "copies", "flows"])]
        what: String,
    },
    /// Add or delete a port at run time (kept across restarts).
    Port {
        #[command(subcommand)]
        op: PortOp,
    },
    /// Forget every learned MAC address.
    Fdb {
        #[arg(value_parser = ["flush"])]
        op: String,
    },
    /// Zero the port and PMD counters.
    Stats {
        #[arg(value_parser = ["clear"])]
        op: String,
    },
    /// Assign the rx queues to PMD threads by their measured load, now.
    Pmd {
        #[arg(value_parser = ["rebalance"])]
        op: String,
    },
    /// Capture the frames a port receives and sends into a pcap file, as
    /// tcpdump -w does (Ctrl-C ends it too), or a pcapng file.
    Capture {
        port: String,
        /// Frames received on the port (rx), sent to it (tx), or both.
        #[arg(long, value_parser = ["rx", "tx", "both"], default_value = "both")]
        direction: String,
        /// Stop after this many frames.
        #[arg(long, short = 'c')]
        count: Option<u64>,
        /// Bytes kept of each frame (0: all, up to 262144).
        #[arg(long, short = 's', default_value_t = 0)]
        snaplen: u32,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// The file to write ("-": standard output, e.g. into `tcpdump -r -`).
        #[arg(short = 'w', long = "write")]
        write: PathBuf,
        /// pcap, or pcapng (the port's name on its interface, each frame's
        /// direction); pcapng by default for a file named *.pcapng.
        #[arg(short = 'F', long = "format", value_parser = ["pcap", "pcapng"])]
        format: Option<String>,
    },
}

// Parsed once per run: the size of `Add` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum PortOp {
    Add {
        name: String,
        #[arg(long = "type", value_parser = ["vhost-user", "dpdk", "vxlan"])]
        kind: String,
        /// vhost-user: socket path (relative to the socket directory).
        #[arg(long)]
        path: Option<String>,
        /// vhost-user: "client" (QEMU is the server) or "server".
        #[arg(long)]
        mode: Option<String>,
        /// dpdk: a PCI address or a vdev string.
        #[arg(long)]
        devargs: Option<String>,
        /// vxlan: the VNI.
        #[arg(long)]
        vni: Option<u32>,
        /// vxlan: the tunnel's own IPv4 address, on its underlay.
        #[arg(long)]
        local_ip: Option<String>,
        /// vxlan: comma-separated remote endpoints (flooded to, the only
        /// ones accepted).
        #[arg(long, value_delimiter = ',')]
        remote_ips: Option<Vec<String>>,
        /// vxlan: the dpdk port carrying the tunnel's UDP/IP.
        #[arg(long)]
        underlay: Option<String>,
        #[arg(long)]
        vlan: Option<u16>,
        /// Comma-separated VLAN ids.
        #[arg(long, value_delimiter = ',')]
        trunk: Option<Vec<u16>>,
        #[arg(long)]
        mtu: Option<u16>,
        #[arg(long)]
        rx_queues: Option<u16>,
        /// Negotiate no checksum/TSO offloads with the guest (or the NIC).
        #[arg(long)]
        no_offloads: bool,
        /// Most MAC addresses the port may have learned at once.
        #[arg(long)]
        mac_limit: Option<u32>,
        /// Ingress policing rate in kbit/s (0: none).
        #[arg(long)]
        ingress_policing_rate: Option<u32>,
        /// Ingress policing bucket in kbit (0: 8000).
        #[arg(long)]
        ingress_policing_burst: Option<u32>,
    },
    Del {
        name: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Cmd::Capture { port, direction, count, snaplen, timeout, write, format } = args.cmd {
        let direction = match direction.as_str() {
            "rx" => CaptureDirection::Rx,
            "tx" => CaptureDirection::Tx,
            _ => CaptureDirection::Both,
        };
        let snaplen = if snaplen == 0 { MAX_SNAPLEN } else { snaplen };
        let named_pcapng = write.extension().is_some_and(|e| e == "pcapng");
        let format = match format.as_deref() {
            Some("pcapng") => CaptureFormat::Pcapng,
            None if named_pcapng => CaptureFormat::Pcapng,
            _ => CaptureFormat::Pcap,
        };
        let command = Command::CaptureStart { port, direction, snaplen, count, timeout_secs: timeout, format };
        return capture(&args.socket, command, &write, args.json);
    }
    let command = match args.cmd {
        Cmd::Show { what } => match what.as_str() {
            "ports" => Command::ShowPorts,
            "fdb" => Command::ShowFdb,
            "pmd" => Command::ShowPmd,
            "mempool" => Command::ShowMempool,
            "copies" => Command::ShowCopies,
            "flows" => Command::ShowFlows,
            _ => Command::ShowPmdRxq,
        },
        Cmd::Port { op: PortOp::Del { name } } => Command::PortDel { name },
        Cmd::Port { op: PortOp::Add { name, kind, path, mode, devargs, vni, local_ip, remote_ips, underlay, vlan, trunk, mtu, rx_queues, no_offloads, mac_limit, ingress_policing_rate, ingress_policing_burst } } => {
            let mut port = json!({ "name": name, "type": kind });
            let fields = [
                ("path", path.map(Value::from)),
                ("mode", mode.map(Value::from)),
                ("devargs", devargs.map(Value::from)),
                ("vni", vni.map(Value::from)),
                ("local_ip", local_ip.map(Value::from)),
                ("remote_ips", remote_ips.map(Value::from)),
                ("underlay", underlay.map(Value::from)),
                ("vlan", vlan.map(Value::from)),
                ("trunk", trunk.map(Value::from)),
                ("mtu", mtu.map(Value::from)),
                ("rx_queues", rx_queues.map(Value::from)),
                ("offloads", no_offloads.then_some(Value::from(false))),
                ("mac_limit", mac_limit.map(Value::from)),
                ("ingress_policing_rate", ingress_policing_rate.map(Value::from)),
                ("ingress_policing_burst", ingress_policing_burst.map(Value::from)),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    port[k] = v;
                }
            }
            Command::PortAdd { port }
        }
        Cmd::Fdb { .. } => Command::FdbFlush,
        Cmd::Stats { .. } => Command::StatsClear,
        Cmd::Pmd { .. } => Command::PmdRebalance,
        Cmd::Capture { .. } => unreachable!("handled above"),
    };
    let show = matches!(
        command,
        Command::ShowPorts
            | Command::ShowFdb
            | Command::ShowPmd
            | Command::ShowPmdRxq
            | Command::ShowMempool
            | Command::ShowCopies
            | Command::ShowFlows
            | Command::PmdRebalance
    );
    let which = command.clone();
    let resp = match request(&args.socket, command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !resp.ok {
        eprintln!("vswitchctl: {}", resp.error.unwrap_or_default());
        return ExitCode::FAILURE;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp.result).unwrap_or_default());
    } else if show {
        if let Err(e) = print_table(&which, resp.result) {
            eprintln!("vswitchctl: unexpected answer: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Writes the capture to `path` (or standard output), then says how many
/// frames it holds, as tcpdump does (on standard error when the capture
/// is on standard output).
fn capture(socket: &std::path::Path, command: Command, path: &std::path::Path, json: bool) -> ExitCode {
    let to_stdout = path.as_os_str() == "-";
    let result = if to_stdout {
        vswitch::ctl_server::capture(socket, command, &mut std::io::stdout().lock())
    } else {
        match std::fs::File::create(path) {
            Ok(f) => vswitch::ctl_server::capture(socket, command, &mut std::io::BufWriter::new(f)),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    };
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    } else {
        format!("{} packets captured on {}\n{} packets dropped by the capture ring", summary.captured, summary.port, summary.dropped)
    };
    if to_stdout {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    ExitCode::SUCCESS
}

fn print_table(cmd: &Command, v: Value) -> Result<(), serde_json::Error> {
    match cmd {
        Command::ShowPorts => {
            let ports: Vec<PortInfo> = serde_json::from_value(v)?;
            println!("{:<12} {:<10} {:<8} {:<14} {:>5} {:>12} {:>12} {:>12} {:>12}  drops", "port", "type", "state", "vlan", "mtu", "rx pkts", "tx pkts", "forwarded", "flooded");
            for p in ports {
                let mut drops: Vec<String> = p.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if p.unlearned > 0 {
                    drops.push(format!("(unlearned={})", p.unlearned));
                }
                if p.lent_to_nics > 0 {
                    drops.push(format!("(lent_to_nics={})", p.lent_to_nics));
                }
                println!(
                    "{:<12} {:<10} {:<8} {:<14} {:>5} {:>12} {:>12} {:>12} {:>12}  {}",
                    p.name, p.kind, p.state, p.vlan, p.mtu, p.rx_packets, p.tx_packets, p.forwarded, p.flooded,
                    if drops.is_empty() { "-".into() } else { drops.join(" ") }
                );
                if !p.detail.is_empty() {
                    println!("             {}", p.detail);
                }
                if !p.features.is_empty() {
                    println!("             features: {}", p.features.join(" "));
                }
                if p.rx_packets > 0 {
                    let (cycles, burst) = (p.busy_cycles as f64 / p.rx_packets as f64, p.rx_packets as f64 / p.rx_bursts.max(1) as f64);
                    println!("             rx: {cycles:.1} cycles a packet (forwarding included), {burst:.1} packets a burst");
                    if p.full_burst_packets > 0 {
                        let (full, share) = (p.full_burst_cycles as f64 / p.full_burst_packets as f64, p.full_burst_packets as f64 / p.rx_packets as f64 * 100.0);
                        println!("                 {full:.1} cycles a packet in full bursts of {BURST} ({share:.0}% of its packets)");
                    }
                }
                if p.ingress_policing_rate > 0 {
                    let burst = if p.ingress_policing_burst == 0 { DEFAULT_BURST_KBIT } else { p.ingress_policing_burst.into() };
                    println!("             ingress policing: {} kbit/s, burst {burst} kbit", p.ingress_policing_rate);
                }
            }
        }
        Command::ShowFdb => {
            let entries: Vec<FdbInfo> = serde_json::from_value(v)?;
            println!("{:>4}  {:<17}  {:<12} {:>5}  remote", "vlan", "mac", "port", "age");
            for e in &entries {
                println!("{:>4}  {:<17}  {:<12} {:>5}  {}", e.vlan, e.mac, e.port, e.age_secs, e.remote.as_deref().unwrap_or(""));
            }
            println!("{} entries", entries.len());
        }
        Command::ShowPmd => {
            let pmds: Vec<PmdInfo> = serde_json::from_value(v)?;
            for p in pmds {
                println!("pmd thread {} core {} (lcore {}):", p.index, p.core, p.lcore);
                println!("  packets received: {}", p.packets);
                println!("  avg. packets per burst: {:.2}", p.avg_burst);
                println!("  busy cycles: {} ({:.2}% of used cycles)", p.busy_cycles, p.busy_pct);
                println!("  idle cycles: {}", p.idle_cycles);
                println!("  avg. cycles per packet: {:.2}", p.cycles_per_packet);
                println!("  iterations: {}", p.iterations);
                println!("  sleep: {} us ({:.2}% of the time) in {} sleeps, {} until a guest kicked ({} ended by a kick)", p.sleep_us, p.sleep_pct, p.sleeps, p.kick_sleeps, p.kicked);
            }
        }
        Command::ShowCopies => {
            let c: CopiesInfo = serde_json::from_value(v)?;
            println!("{:<8} {:>14} {:>16} {:>16} {:>12}", "path", "packets", "payload copies", "bytes copied", "copies/pkt");
            for p in c.paths {
                let per = if p.packets == 0 { "-".to_string() } else { format!("{:.2}", p.payload_copies as f64 / p.packets as f64) };
                println!("{:<8} {:>14} {:>16} {:>16} {:>12}", p.path, p.packets, p.payload_copies, p.bytes_copied, per);
            }
            if c.zero_copy.values().any(|&n| n > 0) {
                let z: Vec<String> = c.zero_copy.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("to NICs from copy-once guests: {}", z.join(" "));
            }
        }
        Command::ShowFlows => {
            let f: FlowsInfo = serde_json::from_value(v)?;
            for c in &f.controllers {
                println!("controller {c} connected");
            }
            println!("{:>8} {:>12} {:>14} {:>8}  flow", "priority", "packets", "bytes", "secs");
            for e in &f.flows {
                let m = if e.matches.is_empty() { String::new() } else { format!("{},", e.matches) };
                let cookie = if e.cookie == 0 { String::new() } else { format!("cookie=0x{:x},", e.cookie) };
                println!("{:>8} {:>12} {:>14} {:>8}  {cookie}{m}actions={}", e.priority, e.packets, e.bytes, e.duration_secs, e.actions);
            }
            println!("{} flows; {} packets to controllers, {} dropped (ring full)", f.flows.len(), f.packet_ins, f.packet_in_dropped);
        }
        Command::ShowMempool => {
            let m: MempoolInfo = serde_json::from_value(v)?;
            println!("mbufs: {} in pool, {} free, {} in use", m.size, m.free, m.in_use);
        }
        Command::PmdRebalance => {
            let r: RebalanceInfo = serde_json::from_value(v)?;
            for m in &r.moved {
                println!("port: {:<12} queue-id: {:>2}  pmd thread {} -> {}", m.port, m.queue, m.from, m.to);
            }
            let what = if r.moved.is_empty() { "no rx queue to move" } else { "moved" };
            println!("{what}; load variance {:.1} -> {:.1} ({:.0}% better)", r.variance_before, r.variance_after, r.improvement_pct);
        }
        _ => {
            let pmds: Vec<PmdRxqInfo> = serde_json::from_value(v)?;
            for p in pmds {
                println!("pmd thread {} core {}:", p.index, p.core);
                for q in p.rxqs {
                    let pin = if q.pinned { "  (pinned)" } else { "" };
                    println!("  port: {:<12} queue-id: {:>2}  pmd usage: {:>3.0} %{pin}", q.port, q.queue, q.usage_pct);
                }
            }
        }
    }
    Ok(())
}
