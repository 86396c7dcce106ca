//! Two real Linux guests under QEMU on vswitchd's vhost-user ports (one in
//! each socket mode): ping, a multi-megabyte TCP transfer with equal
//! checksums, then a QEMU restart and a second transfer, then a switch
//! restart under the running guests (SIGTERM: rings handed back at their
//! bases) and a third, then a SIGKILL and restart and a fourth: after a
//! kill a guest may see one burst per ring again or lose one
//! (vswitch/src/copy_once_state.rs), which TCP absorbs; the test checks that much
//! and no more: the data arrives intact.
mod common;

use std::time::Duration;

use common::*;
use testbed::{Guest, GuestImage, SocketRole};

const PORTS: &str = r#"
[[port]]
name = "vm1"
type = "vhost-user"
mode = "client"
path = "vm1.sock"

[[port]]
name = "vm2"
type = "vhost-user"
mode = "server"
path = "vm2.sock"
"#;

const CMD: Duration = Duration::from_secs(120);

/// B fetches a random file from A's web server over TCP; checksums must match.
fn transfer(a: &mut Guest, b: &mut Guest, mb: u32) {
    a.run_ok(&format!("mkdir -p /www && dd if=/dev/urandom of=/www/f bs=1M count={mb} 2>/dev/null"), CMD).unwrap();
    a.run_ok("pidof httpd || httpd -p 80 -h /www", CMD).unwrap();
    let sum_a = a.run_ok("md5sum /www/f", CMD).unwrap();
    b.run_ok("rm -f /tmp/f; wget -q -O /tmp/f http://10.0.0.1/f", CMD).unwrap();
    let sum_b = b.run_ok("md5sum /tmp/f", CMD).unwrap();
    // The 32-hex-digit token: the console may carry a prompt or a kernel line too.
    let digest = |s: &str| s.split_whitespace().find(|t| t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit())).map(str::to_owned);
    assert!(digest(&sum_a).is_some(), "{sum_a}");
    assert_eq!(digest(&sum_a), digest(&sum_b), "the file arrived intact");
}

fn ping(from: &mut Guest, to: &str) {
    // The first echo may be spent on ARP and learning; three must come back.
    let out = from.run_ok(&format!("ping -c 5 -W 5 {to}"), CMD).unwrap();
    assert!(!out.contains(" 0 packets received"), "{out}");
}

#[test]
fn guests_ping_and_transfer_through_vswitchd_across_a_qemu_restart() {
    scenario(PORTS, false);
}

/// The same on copy-once ports: the switch walks the guests' rings itself.
#[test]
fn guests_on_copy_once_ports() {
    scenario(&copy_once_ports(), false);
}

/// Again with packed virtqueues (QEMU `packed=on`; ports offer them),
/// which the switch walks as it walks split rings, and which resume across
/// switch restarts from the positions the switch kept (QEMU keeps none).
#[test]
fn guests_on_copy_once_ports_with_packed_rings() {
    scenario(&copy_once_ports(), true);
}

fn copy_once_ports() -> String {
    PORTS.replace("type = \"vhost-user\"\n", "type = \"vhost-user\"\ndatapath = \"copy-once\"\n")
}

fn scenario(ports: &str, packed: bool) {
    let image = GuestImage::get().expect("guest image");
    let dir = tempfile::tempdir().unwrap();
    let mut sw = Switchd::start(dir.path(), "", ports);
    let mut a = boot_guest_rings("vm1", &image, dir.path(), SocketRole::QemuServer, 1, packed);
    let mut b = boot_guest_rings("vm2", &image, dir.path(), SocketRole::QemuClient, 2, packed);
    sw.wait_ports("both guests connected", |ps| ps.iter().all(|p| p.state == "up"));
    let on_packed = |p: &vswitch::protocol::PortInfo| p.features.iter().any(|f| f == "ring_packed");
    assert!(sw.ports().iter().all(|p| on_packed(p) == packed), "{:?}", sw.ports());

    ping(&mut b, "10.0.0.1");
    transfer(&mut a, &mut b, 8);

    // Restart the QEMU that is the socket server: the switch reconnects.
    drop(a);
    sw.wait_ports("vm1 gone", |ps| ps.iter().any(|p| p.name == "vm1" && p.state == "waiting"));
    let mut a = boot_guest_rings("vm1", &image, dir.path(), SocketRole::QemuServer, 1, packed);
    sw.wait_ports("vm1 back", |ps| ps.iter().all(|p| p.state == "up"));
    ping(&mut b, "10.0.0.1");
    transfer(&mut a, &mut b, 8);

    let vm2 = sw.port("vm2");
    // vm2 fetched 16 MB (in frames of up to 64 KB: the guests negotiate
    // TSO), and sent acknowledgements back.
    assert!(vm2.tx_bytes > 16 << 20 && vm2.forwarded > 100, "{vm2:?}");

    // Restart the switch under both guests: vm1's QEMU listens and the new
    // switch connects; vm2's QEMU reconnects to the new switch's socket.
    // Split rings resume from the bases the old switch handed back, packed
    // ones from the positions it kept, so TCP sees no lost or repeated
    // segment it cannot recover from.
    assert!(sw.stop().success(), "a graceful stop");
    let config = sw.config.clone();
    drop(sw);
    let mut sw = Switchd::launch(dir.path(), &config, testbed::FilePrefix::new("vswitchd-restart"));
    sw.wait_ports("guests back without a reboot", |ps| ps.iter().all(|p| p.state == "up"));
    ping(&mut b, "10.0.0.1");
    transfer(&mut a, &mut b, 8);

    // SIGKILL: no indices handed back; QEMU resumes from the used rings.
    sw.proc.kill();
    drop(sw);
    let sw = Switchd::launch(dir.path(), &config, testbed::FilePrefix::new("vswitchd-killed"));
    sw.wait_ports("guests back after a kill", |ps| ps.iter().all(|p| p.state == "up"));
    ping(&mut b, "10.0.0.1");
    transfer(&mut a, &mut b, 4);
}
