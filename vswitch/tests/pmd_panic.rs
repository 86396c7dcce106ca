//! A PMD thread that dies takes the daemon down at once (its panic message
//! logged, exit code 70) so that a service manager restarts it, and the
//! restarted switch forwards again; a clean stop (SIGTERM) stops the PMD
//! threads, takes their queues back, closes the ports and then frees the
//! pool, so that it reports no leak.
//!
//! The PMD panic is injected with `VSWITCHD_TEST_PMD_PANIC_AFTER` (read once
//! at start; see `vswitch::switch::PANIC_AFTER_ENV`).
mod common;

use std::process::Command as Cmd;
use std::time::{Duration, Instant};

use common::*;
use testbed::{wait_until, FilePrefix, Proc};

const PORT_IN_USE: &str = "dropped while its queues are in use";
const POOL_LEAK: &str = "mbufs in use; leaking it";
const SOCKET_IN_USE: &str = "dropped while device handles are alive";

fn exchange(a: &mut Vm, b: &mut Vm, seq: u32) {
    let f = frame(BCAST, mac(seq as u8), None, 100, seq);
    a.send(std::slice::from_ref(&f));
    assert_eq!(b.recv(1), [f], "{} -> {}", a.name, b.name);
}

#[test]
fn regression_a_pmd_panic_exits_70_at_once_and_a_restart_forwards() {
    let dir = tempfile::tempdir().unwrap();
    // Client-mode ports: the VMs are the socket servers and outlive the switch.
    let ports = "[[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\npath = \"vm1.sock\"\ndatapath = \"copy-once\"\n\
                 [[port]]\nname = \"vm2\"\ntype = \"vhost-user\"\npath = \"vm2.sock\"\n";
    let mut sw = Switchd::start(dir.path(), "", ports);
    let mut vm1 = Vm::connect("vm1", &dir.path().join("vm1.sock"), true, 1500);
    let mut vm2 = Vm::connect("vm2", &dir.path().join("vm2.sock"), true, 1500);
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    exchange(&mut vm1, &mut vm2, 1);
    assert!(sw.stop().success());
    let config = sw.config.clone();

    // The same config, with the fault armed: the PMD thread panics once it
    // has polled the guests' queues for a while (after "ready", as the
    // guests come up only then).
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_vswitchd"));
    cmd.arg("--config").arg(&config).env("VSWITCHD_TEST_PMD_PANIC_AFTER", "1000");
    let mut faulty = Proc::spawn("vswitchd-faulty", cmd).unwrap();
    faulty.wait_for("vswitchd: ready", DEADLINE).unwrap();
    faulty.wait_for("injected PMD panic", DEADLINE).unwrap();
    let panicked = Instant::now();
    let status = wait_until(Duration::from_secs(1), "vswitchd to exit after its PMD thread panicked", || faulty.try_wait())
        .unwrap_or_else(|e| panic!("{e}; output:\n{}", faulty.output()));
    let out = faulty.output();
    assert_eq!(status.code(), Some(70), "exit code for a restart; output:\n{out}");
    assert!(panicked.elapsed() < Duration::from_secs(1));
    assert!(out.find("vswitchd: ready") < out.find("injected PMD panic"), "{out}");
    let logged = out.lines().find(|l| l.starts_with("vswitchd: PMD thread")).unwrap_or_else(|| panic!("no log line: {out}"));
    assert!(logged.contains("panicked") && logged.contains("injected PMD panic after 1000 iterations"), "{logged}");

    // What a service manager does next: start it again, same config.
    let sw = Switchd::launch(dir.path(), &config, FilePrefix::new("vswitchd-restart"));
    sw.wait_ports("guests back", |ps| ps.iter().all(|p| p.state == "up"));
    exchange(&mut vm1, &mut vm2, 2);
    exchange(&mut vm2, &mut vm1, 3);
}

#[test]
fn regression_sigterm_closes_ports_and_frees_the_pool_without_leak_messages() {
    let dir = tempfile::tempdir().unwrap();
    let iface = format!("vswp{}", std::process::id() % 100_000);
    let ports = format!(
        "[[port]]\nname = \"host\"\ntype = \"dpdk\"\ndevargs = \"net_tap_vswp,iface={iface}\"\n\
         [[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"vm1.sock\"\ndatapath = \"copy-once\"\n"
    );
    let mut sw = Switchd::start(dir.path(), "", &ports);
    let up = Cmd::new("ip").args(["link", "set", &iface, "up"]).output().unwrap();
    assert!(up.status.success(), "ip link set {iface} up: {}", String::from_utf8_lossy(&up.stderr));
    let mut vm = Vm::connect("vm1", &dir.path().join("vm1.sock"), false, 1500);
    sw.wait_ports("both ports up", |ps| ps.iter().all(|p| p.state == "up"));
    // Some traffic through both ports' queues.
    vm.send(&(0..8).map(|i| frame(BCAST, mac(1), None, 100, i)).collect::<Vec<_>>());
    sw.wait_ports("flooded to the tap port", |ps| ps.iter().any(|p| p.name == "host" && p.tx_packets >= 8));

    let status = sw.stop();
    let out = sw.proc.output();
    assert!(status.success(), "SIGTERM: exit 0; output:\n{out}");
    assert!(out.contains("vswitchd: stopped"), "{out}");
    assert!(!out.contains(PORT_IN_USE), "a port left open at a clean stop:\n{out}");
    assert!(!out.contains(SOCKET_IN_USE), "a vhost socket left registered at a clean stop:\n{out}");
    assert!(!out.contains(POOL_LEAK), "the pool leaked at a clean stop:\n{out}");
}
