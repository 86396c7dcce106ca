//! vswitch-bench: plays the VMs, drives a switch (or all of them) through
//! the same topology, and reports throughput, loss and latency.
#![forbid(unsafe_code)]
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bench::gen::{Generator, PortOpts, Ring, Size};
use bench::guests::{self, GuestPlan, GuestSetup};
use bench::harness::{cell, Cell, NotMeasured, Plan, Rate, Row, Scenario};
use bench::peers::{Setup, SwitchKind};
use bench::{plot, report};
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
    /// Two real QEMU guests (TCG) transferring a file over TCP through each
    /// setup, alternated and repeated; Mbit/s as the receiving guest timed
    /// it. Not part of `compare` (about 5 minutes for the default setups).
    Guests(GuestOpts),
    /// Each switch idle (two VMs attached, silent): CPU time of its
    /// processes over a window, alternated and repeated.
    Idle(IdleOpts),
    /// Draws the PNG again from a results JSON (its summary).
    Plot {
        json: PathBuf,
        /// Default: the JSON's path with .png.
        #[arg(long)]
        png: Option<PathBuf>,
    },
}

#[derive(ClapArgs, Clone)]
struct Opts {
    /// Switches: vswitchd, vswitchd-copy-once, vswitchd-copy-once-no-zc
    /// (zero_copy = false), vswitchd-copy-once-sleep (pmd_sleep_max_us =
    /// 500), ovs-normal, ovs-normal-sleep (pmd-maxsleep=500), ovs-flows,
    /// testpmd-io.
    #[arg(long, value_delimiter = ',', default_value = "vswitchd,vswitchd-copy-once,ovs-normal,ovs-flows,testpmd-io")]
    switches: Vec<String>,
    /// Scenarios: 2vm (both directions), 2vm-rings (two 2vm pairs at once,
    /// one on split rings and one on packed, a row each, the packed pair
    /// alternating by repeat; vswitchd only),
    /// 3vm-chain, vm-nic and nic-vm (a VM and a NIC port), vm-nic-drop (a
    /// NIC that drops), vxlan-encap and vxlan-decap (a VM and a remote
    /// VXLAN endpoint behind an underlay NIC).
    #[arg(long, value_delimiter = ',', default_value = "2vm")]
    scenarios: Vec<String>,
    /// Those of --switches also measured with packed rings (the VMs offer
    /// VIRTIO_F_RING_PACKED; a switch that negotiates split rings instead
    /// gets a "not supported" line, never a row), at the flow counts of
    /// --packed-flows and every size but tso64k; "none" for none.
    #[arg(long, value_delimiter = ',', default_value = "vswitchd-copy-once,vswitchd,ovs-normal,testpmd-io")]
    packed: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1")]
    packed_flows: Vec<u32>,
    /// Frame sizes in bytes (64..9000; over 1518 every port gets MTU 9000), imix, or tso64k: each VM
    /// sends 64 KB TCP segments (IPv4, 65160 bytes of payload, MSS 1448)
    /// with a virtio-net GSO header, the switch set up for TSO (OVS with
    /// userspace-tso-enable, testpmd's net_vhost with tso=1). A tso64k row
    /// reports TCP payload: Gbps is payload received, Mpps and loss count
    /// 64 KB segments' worth of payload (however the switch delivered
    /// them: the VMs negotiate GUEST_TSO4 as Linux guests do, so a
    /// switch may hand a segment over whole; one that cuts it into 45
    /// frames says so in the row's notes), cyc/pkt is the
    /// switch core's cycles per 64 KB segment taken in, cp/pkt the bytes
    /// vswitchd copied per segment over the segment's size.
    #[arg(long, value_delimiter = ',', default_value = "64,512,1518,9000,tso64k")]
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
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Seconds of the latency phase (after each throughput phase).
    #[arg(long, default_value_t = 0.5)]
    latency_duration: f64,
    /// A smoke run: 1 repeat, 1 s phases, no latency phase.
    #[arg(long)]
    quick: bool,
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
    /// Enqueue retries when a guest ring is full, without delay (vswitchd's
    /// vhost_retries, OVS's tx-retries-max up to 32, testpmd's io retry).
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

#[derive(ClapArgs, Clone)]
struct GuestOpts {
    /// copy-once, copy-once-no-offloads, rte-vhost, ovs-dpdk-tso, ovs-dpdk.
    #[arg(long, value_delimiter = ',', default_value = "copy-once,copy-once-no-offloads,ovs-dpdk-tso,ovs-dpdk")]
    setups: Vec<String>,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Size of the file transferred.
    #[arg(long, default_value_t = 64)]
    megabytes: u32,
    /// The guests' CPUs (a taskset list). Default: every CPU but the
    /// switch's poll core.
    #[arg(long)]
    guest_cpus: Option<String>,
    #[arg(long, default_value_t = 1)]
    pmd_core: u32,
    #[arg(long, default_value_t = 0)]
    main_core: u32,
    #[arg(long, default_value_t = 512)]
    memory_mb: u32,
    /// auto (if --memory-mb of hugepages are free), on, off (OVS-DPDK
    /// does not start without hugepages).
    #[arg(long, default_value = "auto")]
    hugepages: String,
    #[arg(long, default_value_t = 8)]
    retries: u32,
    #[arg(long, default_value = "bench/results")]
    output: PathBuf,
    /// The vswitchd binary (default: beside this one).
    #[arg(long)]
    vswitchd: Option<PathBuf>,
}

#[derive(ClapArgs, Clone)]
struct IdleOpts {
    #[arg(long, value_delimiter = ',', default_value = "vswitchd-copy-once,vswitchd-copy-once-sleep")]
    switches: Vec<String>,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Seconds measured per switch and repeat.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1)]
    pmd_core: u32,
    #[arg(long, default_value_t = 0)]
    gen_core: u32,
    #[arg(long, default_value_t = 1024)]
    memory_mb: u32,
    /// auto (if 1024 hugepages are free), on, off.
    #[arg(long, default_value = "auto")]
    hugepages: String,
    /// The vswitchd binary (default: beside this one).
    #[arg(long)]
    vswitchd: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = match cli.cmd {
        Cmd::Compare(o) => run(o, "compare"),
        Cmd::Throughput(o) => run(o, "throughput"),
        Cmd::Latency(o) => run(o, "latency"),
        Cmd::Guests(o) => guests(o),
        Cmd::Idle(o) => idle(o),
        Cmd::Plot { json, png } => replot(&json, png),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hugepages_free(pages: u64) -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("HugePages_Free:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .is_some_and(|n| n >= pages)
}

fn vswitchd_path(given: Option<PathBuf>) -> Result<PathBuf, String> {
    match given {
        Some(p) => Ok(p),
        None => Ok(std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("vswitchd")),
    }
}

/// `auto`: whether `pages` 2 MB hugepages are free.
fn hugepages_opt(s: &str, pages: u64) -> bool {
    match s {
        "on" => true,
        "off" => false,
        _ => hugepages_free(pages),
    }
}

fn idle(o: IdleOpts) -> Result<(), String> {
    let kinds = parse_all("switch", &o.switches, SwitchKind::parse)?;
    let hugepages = hugepages_opt(&o.hugepages, 1024);
    let setup = Setup {
        pmd_core: o.pmd_core,
        main_core: o.gen_core,
        hugepages,
        memory_mb: o.memory_mb,
        vhost_retries: 8,
        mac_table_size: 16,
        vswitchd: vswitchd_path(o.vswitchd)?,
        offloads: true,
    };
    let prefix = testbed::FilePrefix::new("bench-gen");
    let gen = Generator::init(o.gen_core, hugepages, prefix.as_str())?;
    let out = bench::idle::measure(&gen, &setup, &kinds, o.repeats.max(1), Duration::from_secs_f64(o.seconds));
    let mut rows = Vec::new();
    for r in out {
        match r {
            Ok(r) => {
                println!("{} repeat {}: {:.1}% of a core", r.switch, r.repeat + 1, r.cores * 100.0);
                rows.push(r);
            }
            Err(e) => println!("not measured: {e}"),
        }
    }
    print!("{}", bench::idle::table(&kinds, &rows));
    Ok(())
}

fn guests(o: GuestOpts) -> Result<(), String> {
    let setups = parse_all("setup", &o.setups, GuestSetup::parse)?;
    let cpus = match o.guest_cpus {
        Some(c) => c,
        None => {
            let n = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
            let others: Vec<String> = (0..n).filter(|&c| c != o.pmd_core || n == 1).map(|c| c.to_string()).collect();
            others.join(",")
        }
    };
    let plan = GuestPlan { setups, repeats: o.repeats.max(1), megabytes: o.megabytes.max(1), cpus };
    let setup = Setup {
        pmd_core: o.pmd_core,
        main_core: o.main_core,
        hugepages: hugepages_opt(&o.hugepages, u64::from(o.memory_mb / 2)),
        memory_mb: o.memory_mb,
        vhost_retries: o.retries,
        mac_table_size: 16,
        vswitchd: vswitchd_path(o.vswitchd)?,
        offloads: true,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let image = testbed::GuestImage::get()?;
    let (rows, failed) = guests::run(&image, &setup, &plan, &|| stop.load(Ordering::Relaxed));
    let sums = guests::summarize(&plan.setups, &rows);
    println!("{}", guests::table(&sums, &failed, &plan));
    std::fs::create_dir_all(&o.output).map_err(|e| format!("{}: {e}", o.output.display()))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let json = o.output.join(format!("guests-{stamp}.json"));
    let doc = serde_json::json!({
        "mode": "guests",
        "setup": { "pmd_core": setup.pmd_core, "guest_cpus": plan.cpus, "hugepages": setup.hugepages, "memory_mb": setup.memory_mb,
                   "megabytes": plan.megabytes, "repeats": plan.repeats },
        "summary": sums,
        "failed": failed,
        "rows": rows,
    });
    std::fs::write(&json, serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    println!("results: {}", json.display());
    Ok(())
}

fn replot(json: &std::path::Path, png: Option<PathBuf>) -> Result<(), String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    let sums: Vec<report::Summary> = serde_json::from_value(doc["summary"].clone()).map_err(|e| format!("{}: summary: {e}", json.display()))?;
    let Some(first) = sums.first() else { return Err(format!("{}: an empty summary", json.display())) };
    let mine: Vec<_> = sums.iter().filter(|s| s.scenario == first.scenario).cloned().collect();
    let png = png.unwrap_or_else(|| json.with_extension("png"));
    let repeats = mine.iter().map(|s| s.repeats).max().unwrap_or(0);
    plot::plot(&mine, &png, &plot_title(doc["mode"].as_str().unwrap_or("compare"), &first.scenario, repeats))?;
    println!("plot: {}", png.display());
    Ok(())
}

/// The lowest and highest of a row's cycles per packet by second, for its
/// progress line: two states of the shared machine show as a twofold span.
fn by_second(cycles: &[f64]) -> String {
    let (Some(lo), Some(hi)) = (cycles.iter().copied().reduce(f64::min), cycles.iter().copied().reduce(f64::max)) else { return String::new() };
    format!(" (by second {lo:.0}-{hi:.0})")
}

fn plot_title(mode: &str, scenario: &str, repeats: usize) -> String {
    format!("vswitch-bench {mode}, {scenario} scenario: median of {repeats} repeat(s), whiskers lowest..highest")
}

fn parse_all<T>(what: &str, items: &[String], f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    items.iter().map(|s| f(s).ok_or(format!("unknown {what} {s}"))).collect()
}

/// Sizes that run in one session: runs of the list needing the same ports
/// (`PortOpts::for_size`), in the order given.
fn sessions(sizes: &[Size]) -> Vec<Vec<Size>> {
    let mut out: Vec<Vec<Size>> = Vec::new();
    for &z in sizes {
        let opts = |z: Size| PortOpts::for_size(z, Ring::Split);
        match out.iter_mut().find(|g| opts(g[0]) == opts(z)) {
            Some(g) => g.push(z),
            None => out.push(vec![z]),
        }
    }
    out
}

fn run(mut o: Opts, mode: &str) -> Result<(), String> {
    if o.matrix {
        o.sizes = ["64", "128", "256", "512", "1024", "1518", "9000", "imix", "tso64k"].map(String::from).to_vec();
        o.flows = vec![1, 1000, 65536];
        o.tso_flows = o.flows.clone();
        o.packed_flows = o.flows.clone();
        o.scenarios = vec!["2vm".into(), "3vm-chain".into()];
    }
    if o.quick {
        o.repeats = 1;
        o.duration = 1.0;
        o.latency_fraction = 0.0;
    }
    let switches = parse_all("switch", &o.switches, SwitchKind::parse)?;
    let packed: Vec<SwitchKind> = if o.packed.iter().any(|s| s == "none") {
        Vec::new()
    } else {
        parse_all("switch", &o.packed, SwitchKind::parse)?.into_iter().filter(|k| switches.contains(k)).collect()
    };
    let scenarios = parse_all("scenario", &o.scenarios, Scenario::parse)?;
    let sizes = parse_all("frame size", &o.sizes, Size::parse)?;
    if mode != "compare" && switches.len() != 1 {
        return Err(format!("{mode} measures one switch: give --switches NAME"));
    }
    let hugepages = hugepages_opt(&o.hugepages, 1024);
    let vswitchd = vswitchd_path(o.vswitchd.clone())?;
    let max_flows = o.flows.iter().copied().max().unwrap_or(1) as usize;
    let setup = Setup {
        pmd_core: o.pmd_core,
        main_core: o.gen_core,
        hugepages,
        memory_mb: o.memory_mb,
        vhost_retries: o.retries,
        mac_table_size: (max_flows * 3 * 2).next_power_of_two(),
        vswitchd,
        offloads: true,
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
        latency_duration: Duration::from_secs_f64(o.latency_duration),
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
    let retries: Vec<(String, String)> = switches.iter().map(|k| (k.name().into(), k.retries(o.retries))).collect();
    eprintln!(
        "vswitch-bench: poll core {} for every switch, generator on core {}, {} MB {}, {} s per phase, {} repeats; vhost retries: {}",
        setup.pmd_core,
        o.gen_core,
        setup.memory_mb,
        if hugepages { "hugepages" } else { "without hugepages" },
        o.duration,
        plan.repeats,
        retries.iter().map(|(n, r)| format!("{n} {r}")).collect::<Vec<_>>().join(", ")
    );

    // (ring, switches, flows, sizes of one session), in the order run.
    let mut work: Vec<(Ring, &[SwitchKind], u32, Vec<Size>)> = Vec::new();
    for (ring, kinds) in [(Ring::Split, &plan.switches), (Ring::Packed, &packed)] {
        for &flows in &plan.flows {
            if kinds.is_empty() || (ring == Ring::Packed && !o.packed_flows.contains(&flows)) {
                continue;
            }
            // tso64k runs only with the flow counts of --tso-flows, and
            // not on packed rings (it measures segmentation, not rings).
            let keep = |z: &&Size| **z != Size::Tso || (ring == Ring::Split && o.tso_flows.contains(&flows));
            let sizes: Vec<Size> = plan.sizes.iter().filter(keep).copied().collect();
            work.extend(sessions(&sizes).into_iter().map(|g| (ring, kinds.as_slice(), flows, g)));
        }
    }
    if plan.sizes.contains(&Size::Tso) && !plan.flows.iter().any(|f| o.tso_flows.contains(f)) {
        eprintln!("vswitch-bench: no tso64k rows: none of --flows {:?} is in --tso-flows {:?}", plan.flows, o.tso_flows);
    }
    // A scenario that sets each VM's ring itself runs in the split-ring sessions only.
    let runs = |sc: &bench::harness::Scenario| {
        let mixed = sc.rings_split_at.is_some();
        work.iter().filter(move |w| !mixed || w.0 == Ring::Split)
    };
    let total = plan.repeats * plan.scenarios.iter().map(|sc| runs(sc).map(|w| w.1.len()).sum::<usize>()).sum::<usize>();
    let mut rows: Vec<Row> = Vec::new();
    let mut missing: Vec<NotMeasured> = Vec::new();
    let mut n = 0;
    'all: for sc in &plan.scenarios {
        // Every session once per repeat, split rings then packed: a packed
        // row and its split row are measured minutes apart, not a whole
        // run's half apart, on machines whose speed drifts between them.
        for repeat in 0..plan.repeats {
            for (ring, kinds, flows, sizes) in runs(sc) {
                // A B C D, then B C D A...: each switch measured close in
                // time to the others, in a different position each repeat.
                let k = kinds.len();
                for i in 0..k {
                    if stop.load(Ordering::Relaxed) {
                        eprintln!("vswitch-bench: interrupted; reporting what was measured");
                        break 'all;
                    }
                    let kind = kinds[(i + repeat) % k];
                    n += 1;
                    let names: Vec<String> = sizes.iter().map(Size::label).collect();
                    eprint!("[{n}/{total}] {} {} ring, {} {flows} flows, {} B, repeat {} ...", kind.name(), ring.name(), sc.name, names.join("/"), repeat + 1);
                    let c = Cell { kind, scenario: sc, flows: *flows, sizes, ring: *ring, repeat };
                    let rtt = bench::probe::line_round_trip(setup.pmd_core as usize, o.gen_core as usize);
                    if let Some(rtt) = rtt {
                        eprint!(" (line round trip {rtt:.0} cycles)");
                    }
                    for r in cell(&gen, &setup, &plan, &c, &format!("r{n}v")) {
                        match r {
                            Ok(mut r) => {
                                r.line_round_trip = rtt;
                                let bound = if r.generator_bound { " (generator-bound)" } else { "" };
                                let cyc = r.cycles_per_packet.map(|c| format!(", {c:.0} cyc/pkt{}", by_second(&r.cycles_by_second))).unwrap_or_default();
                                // A row per ring of a phase that had both.
                                let full = r.full_burst_cycles.map(|c| format!(", {c:.0} cyc/pkt in full ones")).unwrap_or_default();
                                let ring = if sc.rings_split_at.is_some() { format!(" {} ({:.1} a burst{full})", r.ring.name(), r.switch_burst.unwrap_or(0.0)) } else { String::new() };
                                if r.size == Size::Tso.label() {
                                    eprint!(" tso64k{ring}: {:.2} Gbit/s of TCP payload ({:.4} M segments/s), loss {:.3}%{cyc}{bound};", r.gbps, r.rx_mpps, r.loss * 100.0);
                                } else {
                                    eprint!(" {}{ring}: {:.3} Mpps, loss {:.3}%{cyc}{bound};", r.size, r.rx_mpps, r.loss * 100.0);
                                }
                                rows.push(r);
                            }
                            Err(m) => {
                                eprint!(" {}: {}: {};", m.size, if m.unsupported { "not supported" } else { "failed" }, m.reason);
                                missing.push(m);
                            }
                        }
                    }
                    eprintln!();
                }
            }
        }
    }
    let sums = report::summarize(&rows);
    println!("{}", report::table(&sums, &missing, &retries));
    std::fs::create_dir_all(&o.output).map_err(|e| format!("{}: {e}", o.output.display()))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let json = o.output.join(format!("{mode}-{stamp}.json"));
    let doc = serde_json::json!({
        "mode": mode,
        "setup": {
            "pmd_core": setup.pmd_core, "generator_core": o.gen_core, "hugepages": hugepages,
            "memory_mb": setup.memory_mb, "vhost_retries": retries.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "seconds_per_phase": o.duration, "latency_seconds": o.latency_duration, "repeats": plan.repeats,
            "loss_tolerance": plan.loss_tolerance, "full_rfc2544": plan.full,
        },
        "summary": sums,
        "not_measured": missing,
        "rows": rows,
    });
    std::fs::write(&json, serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    println!("results: {}", json.display());
    for sc in &plan.scenarios {
        let mine: Vec<_> = sums.iter().filter(|s| s.scenario == sc.name).cloned().collect();
        if mine.is_empty() {
            continue;
        }
        let name = if plan.scenarios.len() == 1 { format!("{mode}-{stamp}.png") } else { format!("{mode}-{stamp}-{}.png", sc.name) };
        let png = o.output.join(name);
        match plot::plot(&mine, &png, &plot_title(mode, &sc.name, plan.repeats)) {
            Ok(()) => println!("plot: {}", png.display()),
            Err(e) => eprintln!("vswitch-bench: no plot: {e}"),
        }
    }
    Ok(())
}
