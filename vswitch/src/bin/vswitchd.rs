//! vswitchd: starts the EAL, opens the configured ports, runs one poll-mode
//! thread per configured core, and answers vswitchctl on a control socket.
#![forbid(unsafe_code)]
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pmd_bridge::{Eal, Mempool};
use vswitch::config::{self, PortKind, VhostMode};
use vswitch::eal_setup::{eal_args, pool_size, MBUF_DATA_ROOM, POOL_CACHE};
use vswitch::ports::claim_socket_path;
use vswitch::switch::{StartError, Switch};
use vswitch::{ctl_server, metrics};

/// How often the control thread looks at guests' events, ages the MAC
/// table, reclaims buffers lent to NICs and reads OpenFlow when no command
/// wakes it. rte_vhost's event thread waits for this loop on some guest
/// messages (a memory table, a departure), every guest's messages behind
/// it: so not longer, though each wakeup costs an idle host CPU time.
const CONTROL_TICK: Duration = Duration::from_millis(5);

#[derive(Parser)]
#[command(version, about = "Userspace virtual switch on DPDK")]
struct Args {
    /// The switch configuration (TOML).
    #[arg(long, short)]
    config: PathBuf,
}

/// The exit code when a PMD thread died (EX_SOFTWARE): the switch cannot
/// go on without it, and its service manager restarts it
/// (`contrib/vswitchd.service`).
const EXIT_PMD_DIED: u8 = 70;

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::PmdDied(e)) => {
            eprintln!("vswitchd: {e}; exiting ({EXIT_PMD_DIED}) to be restarted");
            ExitCode::from(EXIT_PMD_DIED)
        }
        Err(Failure::Other(e)) => {
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Other(String),
    PmdDied(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Other(e)
    }
}

/// A PMD thread died while the switch ran: say so and exit at once, as
/// after SIGKILL (README): the process is not trusted to stop cleanly, and
/// a restarted switch reclaims the sockets and the guests' rings.
fn die(death: &str, ctl: &std::path::Path) -> ! {
    eprintln!("vswitchd: {death}; exiting ({EXIT_PMD_DIED}) to be restarted");
    let _ = std::fs::remove_file(ctl);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(EXIT_PMD_DIED.into())
}

/// Serves `/metrics` and says where (the port chosen, for port 0).
fn serve_metrics(listener: std::net::TcpListener) -> Result<std::sync::mpsc::Receiver<ctl_server::Job>, String> {
    let addr = listener.local_addr().map_err(|e| format!("metrics: {e}"))?;
    let scrapes = metrics::serve(listener)?;
    println!("vswitchd: metrics on http://{addr}/metrics");
    Ok(scrapes)
}

fn run(args: Args) -> Result<(), Failure> {
    let cfg = config::load(&args.config).map_err(|e| e.to_string())?;
    let state = config::load_state(&cfg.switch.state_file).map_err(|e| e.to_string())?;
    let cfg = cfg.with_state(&state).map_err(|e| e.to_string())?;

    // Everything that can be refused is refused before DPDK starts.
    let ctl = cfg.switch.control_socket.clone();
    if let Some(dir) = ctl.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&cfg.switch.socket_dir).map_err(|e| format!("create {}: {e}", cfg.switch.socket_dir.display()))?;
    claim_socket_path(&ctl, "control socket")?;
    let of_socket = cfg.switch.openflow_socket.clone();
    if let Some(dir) = of_socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    claim_socket_path(&of_socket, "OpenFlow socket")?;
    let metrics = cfg.switch.metrics.map(metrics::bind).transpose()?;
    for p in &cfg.ports {
        if let PortKind::VhostUser { path, mode: VhostMode::Server, .. } = &p.kind {
            claim_socket_path(path, &format!("port {} socket", p.name))?;
        }
    }
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&term)).map_err(|e| e.to_string())?;
    }

    let eal = Eal::init(&eal_args(&cfg)).map_err(|e| e.to_string())?;
    let (mbufs, sizing) = pool_size(&cfg);
    println!("vswitchd: {sizing}");
    let pool = Arc::new(Mempool::new(&eal, "vswitchd", mbufs, POOL_CACHE, MBUF_DATA_ROOM).map_err(|e| e.to_string())?);
    let mut sw = Switch::start(eal, cfg.clone(), state, pool).map_err(|e| match e {
        StartError::Failed(e) => Failure::Other(e),
        StartError::PmdDied(e) => Failure::PmdDied(e),
    })?;
    let served = ctl_server::serve(&ctl, sw.capture_handoff())
        .and_then(|jobs| Ok((jobs, metrics.map(serve_metrics).transpose()?)))
        .and_then(|j| sw.start_openflow().map(|()| j));
    let (jobs, scrapes) = match served {
        Ok(j) => j,
        Err(e) => {
            sw.shutdown();
            return Err(e.into());
        }
    };
    println!("vswitchd: ready: {} port(s), {} PMD thread(s), control socket {}", cfg.ports.len(), cfg.switch.pmd_cores.len(), ctl.display());
    for p in &cfg.ports {
        if let PortKind::VhostUser { path, mode, .. } = &p.kind {
            let chardev = match mode {
                VhostMode::Server => format!("socket,id={0},path={1},reconnect=1", p.name, path.display()),
                VhostMode::Client => format!("socket,id={0},path={1},server=on,wait=off", p.name, path.display()),
            };
            println!("vswitchd: connect a VM to {}: -chardev {chardev} -netdev vhost-user,id={0}n,chardev={0} -device virtio-net-pci,netdev={0}n (guest memory shared: -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem)", p.name);
        }
    }

    while !term.load(Ordering::Relaxed) {
        // Every CONTROL_TICK at most (the wait for a command below, which
        // a command ends at once).
        if let Some(death) = sw.dead_pmd() {
            die(&death, &ctl);
        }
        sw.poll_events();
        sw.tick();
        // A scrape's show commands, all in this iteration.
        for (cmd, reply) in scrapes.iter().flat_map(|s| s.try_iter()) {
            let _ = reply.send(sw.handle(cmd));
        }
        if let Ok((cmd, reply)) = jobs.recv_timeout(CONTROL_TICK) {
            let _ = reply.send(sw.handle(cmd));
        }
    }
    println!("vswitchd: stopping");
    // PMD threads stopped and joined, their queues taken back, ports
    // closed; then the pool (and the EAL) go with the switch.
    sw.shutdown();
    drop(sw);
    let _ = std::fs::remove_file(&ctl);
    let _ = std::fs::remove_file(&of_socket);
    println!("vswitchd: stopped");
    Ok(())
}
