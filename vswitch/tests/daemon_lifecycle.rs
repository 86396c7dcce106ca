//! vswitchd's start and stop: config errors refused before anything is
//! touched, sockets in use refused, stale ones reused, SIGTERM exits 0 and
//! removes what the daemon created, and vswitchctl talks to it.
mod common;

use std::os::unix::net::UnixListener;
use std::process::Command as Cmd;

use common::*;

fn vswitchd(config: &std::path::Path) -> std::process::Output {
    Cmd::new(env!("CARGO_BIN_EXE_vswitchd")).arg("--config").arg(config).output().unwrap()
}

#[test]
fn config_errors_name_file_and_field_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl.sock");
    let cases = [
        ("[[port]]\nname = \"a\"\ntype = \"vhost-user\"\npath = \"a.sock\"\nmtu = 9500\n", "port[0] \"a\".mtu"),
        ("[[port]]\nname = \"a\"\ntype = \"vhost-user\"\npath = \"a.sock\"\n[[port]]\nname = \"a\"\ntype = \"vhost-user\"\npath = \"b.sock\"\n", "duplicate port name"),
        ("[switch]\nfdb_size = \"big\"\n", "switch.fdb_size"),
        ("[[port]]\nname = \"a\"\ntype = \"nic\"\n", "port[0]"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad{i}.toml"));
        let text = if body.starts_with("[switch]") {
            body.replace("[switch]\n", &format!("[switch]\ncontrol_socket = \"{}\"\n", ctl.display()))
        } else {
            format!("[switch]\ncontrol_socket = \"{}\"\nsocket_dir = \"{}\"\n{body}", ctl.display(), dir.path().display())
        };
        std::fs::write(&config, text).unwrap();
        let out = vswitchd(&config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} must fail");
        assert!(err.contains(&format!("bad{i}.toml")) && err.contains(want), "case {i}: {err}");
        assert!(!err.contains("EAL"), "refused before DPDK starts: {err}");
        assert!(!ctl.exists());
    }
    let out = Cmd::new(env!("CARGO_BIN_EXE_vswitchd")).arg("--config").arg(dir.path().join("missing.toml")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn sockets_in_use_are_refused_stale_ones_reused_and_sigterm_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let ports = "[[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"vm1.sock\"\n";
    let sock = dir.path().join("vm1.sock");

    // A live process on the port's socket: refused, and it keeps its socket.
    let live = UnixListener::bind(&sock).unwrap();
    let config = dir.path().join("switch.toml");
    std::fs::write(
        &config,
        format!(
            "[switch]\ncontrol_socket = \"{}\"\nsocket_dir = \"{}\"\nhugepages = \"off\"\n{ports}",
            dir.path().join("ctl.sock").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let out = vswitchd(&config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("live process"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(sock.exists());

    // The process dies, its socket file stays: stale, removed and reused.
    drop(live);
    assert!(sock.exists());
    let mut sw = Switchd::start(dir.path(), "", ports);
    let mut vm = Vm::connect("vm1", &sock, false, 1500);
    sw.wait_ports("guest up", |ps| ps[0].state == "up");

    // vswitchctl itself, table and JSON.
    let ctl = |args: &[&str]| {
        let out = Cmd::new(env!("CARGO_BIN_EXE_vswitchctl")).arg("--socket").arg(&sw.ctl).args(args).output().unwrap();
        assert!(out.status.success(), "vswitchctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(ctl(&["show", "ports"]).contains("vm1"));
    let json: serde_json::Value = serde_json::from_str(&ctl(&["--json", "show", "pmd-rxq"])).unwrap();
    assert_eq!(json[0]["rxqs"][0]["port"], "vm1");
    assert!(ctl(&["show", "pmd"]).contains("avg. cycles per packet"));
    ctl(&["stats", "clear"]);
    ctl(&["fdb", "flush"]);
    let bad = Cmd::new(env!("CARGO_BIN_EXE_vswitchctl")).arg("--socket").arg(&sw.ctl).args(["port", "del", "nope"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("no port named"));

    vm.disconnect();
    assert!(sw.stop().success(), "SIGTERM: exit 0");
    assert!(!sw.ctl.exists(), "control socket removed");
    assert!(!sock.exists(), "server socket removed");
}
