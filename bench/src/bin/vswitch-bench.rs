//! vswitch-bench: plays the VMs, drives a switch (or all of them) through
//! the same topology, and reports throughput, loss and latency.
#![forbid(unsafe_code)]
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bench::gen::{Generator, Size};
use bench::harness::{cell, Cell, Plan, Rate, Row, Scenario};
use bench::peers::{Setup, SwitchKind};
use bench::report;
use clap::{Args as ClapArgs, Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Benchmark vswitchd against OVS-DPDK and testpmd")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every switch through the same scenarios, alternated and repeated.
    Compare(Opts),
    /// One switch's throughput (quick: receive rate at full load; --full: RFC 2544).
    Throughput(Opts),
    /// One switch's latency at a fraction of its throughput.
    Latency(Opts),
}

#[derive(ClapArgs, Clone)]
struct Opts {
    /// Switches: vswitchd, vswitchd-copy-once, ovs-normal, ovs-flows, testpmd-io.
    #[arg(long, value_delimiter = ',', default_value = "vswitchd,vswitchd-copy-once,ovs-normal,ovs-flows,testpmd-io")]
    switches: Vec<String>,
    /// Scenarios: 2vm (both directions), 3vm-chain.
    #[arg(long, value_delimiter = ',', default_value = "2vm")]
    scenarios: Vec<String>,
    /// Frame sizes in bytes (64..1518, 9000), imix, or tso64k: each VM
    /// sends 64 KB TCP segments (IPv4, 65160 bytes of payload, MSS 1448)
    /// with a virtio-net GSO header, the switch set up for TSO (OVS with
    /// userspace-tso-enable, testpmd's net_vhost with tso=1). A tso64k row
    /// reports TCP payload: Gbps is payload received, Mpps and loss count
    /// 64 KB segments' worth of payload (however the switch delivered
    /// them: the receiving VMs have no receive offloads, so a switch that
    /// follows the spec cuts each segment into 45 frames), cyc/pkt is the
    /// switch core's cycles per 64 KB segment taken in, cp/pkt the bytes
    /// vswitchd copied per segment over the segment's size.
    #[arg(long, value_delimiter = ',', default_value = "64,512,1518,tso64k")]
    sizes: Vec<String>,
    /// Flows (distinct MAC and IP pairs) per VM.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    flows: Vec<u32>,
    /// Flows per VM of the tso64k rows (those of --flows that are listed
    /// here; --matrix: all). A 64 KB segment costs the same lookup as a
    /// 64-byte frame, so the flow count matters little to these rows and
    /// each costs a switch start-up.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    tso_flows: Vec<u32>,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// RFC 2544 binary search instead of the full-load receive rate.
    #[arg(long)]
    full: bool,
    /// Loss tolerated by the RFC 2544 search, in percent (0 is allowed).
    #[arg(long, default_value_t = 0.1)]
    loss_tolerance: f64,
    /// Latency is measured at this fraction of each row's throughput.
    #[arg(long, default_value_t = 0.5)]
    latency_fraction: f64,
    /// The whole matrix: every size (tso64k too), 1/1k/64k flows, both scenarios.
    #[arg(long)]
    matrix: bool,
    /// Where the JSON and the plot go.
    #[arg(long, default_value = "bench/results")]
    output: PathBuf,
    /// auto (if free hugepages), on, off.
    #[arg(long, default_value = "auto")]
    hugepages: String,
    #[arg(long, default_value_t = 1)]
    pmd_core: u32,
    #[arg(long, default_value_t = 0)]
    gen_core: u32,
    /// Enqueue retries when a guest ring is full (vswitchd and OVS).
    #[arg(long, default_value_t = 8)]
    retries: u32,
    #[arg(long, default_value_t = 1024)]
    memory_mb: u32,
    /// Offered rate per stream: packets (tso64k: segments) per second, or a
    /// percentage of --line-rate-gbps (e.g. 50%; a segment counts as the
    /// 45 frames it becomes). Default: as fast as the switch takes.
    #[arg(long)]
    rate: Option<String>,
    #[arg(long, default_value_t = 10.0)]
    line_rate_gbps: f64,
    /// Busy-wait per generator burst, in microseconds (a deliberately slow
    /// generator; for checking the bottleneck attribution).
    #[arg(long, default_value_t = 0)]
    throttle_us: u64,
    /// The vswitchd binary (default: beside this one).
    #[arg(long)]
    vswitchd: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (opts, mode) = match cli.cmd {
        Cmd::Compare(o) => (o, "compare"),
        Cmd::Throughput(o) => (o, "throughput"),
        Cmd::Latency(o) => (o, "latency"),
    };
    match run(opts, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hugepages_free() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("HugePages_Free:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .is_some_and(|n| n >= 1024)
}

fn run(mut o: Opts, mode: &str) -> Result<(), String> {
    if o.matrix {
        o.sizes = ["64", "128", "256", "512", "1024", "1518", "9000", "imix", "tso64k"].map(String::from).to_vec();
        o.flows = vec![1, 1000, 65536];
        o.tso_flows = o.flows.clone();
        o.scenarios = vec!["2vm".into(), "3vm-chain".into()];
    }
    let switches = o.switches.iter().map(|s| SwitchKind::parse(s).ok_or(format!("unknown switch {s}"))).collect::<Result<Vec<_>, _>>()?;
    let scenarios = o.scenarios.iter().map(|s| Scenario::parse(s).ok_or(format!("unknown scenario {s}"))).collect::<Result<Vec<_>, _>>()?;
    let sizes = o.sizes.iter().map(|s| Size::parse(s).ok_or(format!("bad frame size {s}"))).collect::<Result<Vec<_>, _>>()?;
    if mode != "compare" && switches.len() != 1 {
        return Err(format!("{mode} measures one switch: give --switches NAME"));
    }
    let hugepages = match o.hugepages.as_str() {
        "on" => true,
        "off" => false,
        _ => hugepages_free(),
    };
    let vswitchd = match o.vswitchd.clone() {
        Some(p) => p,
        None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("vswitchd"),
    };
    let max_flows = o.flows.iter().copied().max().unwrap_or(1) as usize;
    let setup = Setup {
        pmd_core: o.pmd_core,
        main_core: o.gen_core,
        hugepages,
        memory_mb: o.memory_mb,
        vhost_retries: o.retries,
        mac_table_size: (max_flows * 3 * 2).next_power_of_two(),
        vswitchd,
    };
    let plan = Plan {
        switches: switches.clone(),
        scenarios,
        sizes,
        flows: o.flows.clone(),
        repeats: o.repeats.max(1),
        duration: Duration::from_secs_f64(o.duration),
        full: o.full,
        loss_tolerance: o.loss_tolerance / 100.0,
        latency_fraction: if mode == "throughput" { 0.0 } else { o.latency_fraction },
        throttle: Duration::from_micros(o.throttle_us),
        rate: match &o.rate {
            None => None,
            Some(r) => Some(Rate::parse(r, o.line_rate_gbps).ok_or(format!("bad rate {r}: give packets per second or N%"))?),
        },
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let prefix = testbed::FilePrefix::new("bench-gen");
    let gen = Generator::init(o.gen_core, hugepages, prefix.as_str())?;
    eprintln!(
        "vswitch-bench: poll core {} for every switch, generator on core {}, {} MB {}, vhost retries {} (vswitchd, OVS; testpmd io has none), {} s per phase, {} repeats",
        setup.pmd_core,
        o.gen_core,
        setup.memory_mb,
        if hugepages { "hugepages" } else { "without hugepages" },
        setup.vhost_retries,
        o.duration,
        plan.repeats
    );

    let mut rows: Vec<Row> = Vec::new();
    // A tso64k size runs only with the flow counts of --tso-flows.
    let runs = |flows: u32, size: Size| size != Size::Tso || o.tso_flows.contains(&flows);
    let cells: usize = plan.flows.iter().map(|&f| plan.sizes.iter().filter(|&&z| runs(f, z)).count()).sum();
    if plan.sizes.contains(&Size::Tso) && !plan.flows.iter().any(|&f| runs(f, Size::Tso)) {
        eprintln!("vswitch-bench: no tso64k rows: none of --flows {:?} is in --tso-flows {:?}", plan.flows, o.tso_flows);
    }
    let total = plan.scenarios.len() * cells * plan.repeats * plan.switches.len();
    let mut n = 0;
    'all: for sc in &plan.scenarios {
        for &flows in &plan.flows {
            for &size in plan.sizes.iter().filter(|&&z| runs(flows, z)) {
                for repeat in 0..plan.repeats {
                    // A B C D, then B C D A...: each switch measured close in
                    // time to the others, in a different position each repeat.
                    let k = plan.switches.len();
                    for i in 0..k {
                        if stop.load(Ordering::Relaxed) {
                            eprintln!("vswitch-bench: interrupted; reporting what was measured");
                            break 'all;
                        }
                        let kind = plan.switches[(i + repeat) % k];
                        n += 1;
                        let z = if let Size::Fixed(b) = size { format!("{b} B") } else { size.label() };
                        eprint!("[{n}/{total}] {} {} {} flows {z}, repeat {} ... ", kind.name(), sc.name, flows, repeat + 1);
                        let c = Cell { kind, scenario: sc, flows, size, repeat };
                        match cell(&gen, &setup, &plan, &c, &format!("r{n}v")) {
                            Ok(r) => {
                                let bound = if r.generator_bound { " (generator-bound)" } else { "" };
                                if size == Size::Tso {
                                    eprintln!("{:.2} Gbit/s of TCP payload ({:.4} M segments/s), loss {:.3}%{bound}", r.gbps, r.rx_mpps, r.loss * 100.0);
                                } else {
                                    eprintln!("{:.3} Mpps, loss {:.3}%{bound}", r.rx_mpps, r.loss * 100.0);
                                }
                                rows.push(r);
                            }
                            Err(e) => eprintln!("failed: {e}"),
                        }
                    }
                }
            }
        }
    }
    let sums = report::summarize(&rows);
    println!("{}", report::table(&sums));
    std::fs::create_dir_all(&o.output).map_err(|e| format!("{}: {e}", o.output.display()))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let json = o.output.join(format!("{mode}-{stamp}.json"));
    let doc = serde_json::json!({
        "mode": mode,
        "setup": {
            "pmd_core": setup.pmd_core, "generator_core": o.gen_core, "hugepages": hugepages,
            "memory_mb": setup.memory_mb, "vhost_retries": setup.vhost_retries,
            "testpmd_retries": 0, "seconds_per_phase": o.duration, "repeats": plan.repeats,
            "loss_tolerance": plan.loss_tolerance, "full_rfc2544": plan.full,
        },
        "summary": sums,
        "rows": rows,
    });
    std::fs::write(&json, serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    println!("results: {}", json.display());
    if !sums.is_empty() {
        let png = o.output.join(format!("{mode}-{stamp}.png"));
        match report::plot(&sums, &png, &format!("{} ({} scenario)", mode, sums[0].scenario)) {
            Ok(()) => println!("plot: {}", png.display()),
            Err(e) => eprintln!("vswitch-bench: no plot: {e}"),
        }
    }
    Ok(())
}
