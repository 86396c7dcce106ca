//! A guest that resets its device in a loop: a vhost-user frontend (this
//! test speaks vhost-user itself, with rust-vmm's frontend, from a thread of
//! its own) connects, brings the device up and hangs up, as fast as the
//! switch lets it. Meanwhile two other guests attach and exchange frames:
//! they must come up promptly, and the switch must back the flapping port
//! off (it says so, once per back-off) instead of replanning every PMD
//! thread twice per reset. After the storm that port's guest attaches and
//! forwards like any other.
mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::frontend::{bring_up, rings, shared_memory, Setup};
use common::*;
use testbed::wait_until;
use vhost::vhost_user::Frontend;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const SIZE: u16 = 64;
/// Resets the flapping guest makes at least, however quickly the rest goes.
const MIN_FLAPS: u32 = 40;
/// How long the other guests may take to attach and forward during the
/// storm: a few vhost-user exchanges and two replans each, on a busy
/// 2-core machine.
const ATTACH_DEADLINE: Duration = Duration::from_secs(5);
/// How long the flapping guest's device stays up at most before it resets.
const UP_FOR: Duration = Duration::from_millis(20);
/// The switch's device arrivals per second before it backs a port off.
const FLAP_LIMIT: usize = 5;

/// Whether the switch took both rings: a copy-once port polls, and says so
/// in each used ring's flags (VRING_USED_F_NO_NOTIFY) when it attaches.
fn taken(mem: &GuestMemoryMmap) -> bool {
    (0..2).all(|q| mem.read_obj::<u16>(GuestAddress(rings(q, SIZE).2)).unwrap() & 1 != 0)
}

/// One device reset as the switch sees it: connect, negotiate, set up and
/// enable both rings (the device is up: rte_vhost's new_device), stay up
/// until the switch took the rings (at most `UP_FOR`, as a guest driver
/// that resets as soon as it is up), hang up (destroy_device). False if the
/// switch hung up first. The memory is the same for every connection.
fn flap_once(sock: &Path, mem: &GuestMemoryMmap) -> bool {
    for q in 0..2 {
        mem.write_obj(0u16, GuestAddress(rings(q, SIZE).2)).unwrap();
    }
    let Ok(stream) = UnixStream::connect(sock) else { return false };
    let mut fe = Frontend::from_stream(stream, 2);
    if bring_up(&mut fe, mem, &Setup { size: SIZE, ..Setup::default() }).is_err() {
        return false;
    }
    let up = Instant::now();
    while !taken(mem) && up.elapsed() < UP_FOR {
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

/// Sets the flag when dropped: the flapper stops even if the test panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `n` frames received by `vm` before `deadline`.
fn recv_by(vm: &mut Vm, n: usize, deadline: Instant) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(vm.drain());
    }
    got
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn regression_a_flapping_guest_is_backed_off_and_others_attach_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let ports = ["flap", "vm2", "vm3"].map(|n| server_port(n, "copy-once")).concat();
    let sw = Switchd::start(dir.path(), "", &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let flap_sock = sock("flap");
    let mark = sw.proc.output_len();
    let stop = AtomicBool::new(false);
    let flaps = AtomicU32::new(0);

    let (took, storm, mut vm2, _vm3) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let flapper = s.spawn(|| {
            let mem = shared_memory(&[(0, 1 << 20)]);
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < DEADLINE {
                if flap_once(&flap_sock, &mem) {
                    flaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        wait_until(DEADLINE, "the storm to start", || (flaps.load(Ordering::Relaxed) >= 10).then_some(())).unwrap();

        // Two guests attach and exchange frames while it goes on.
        let start = Instant::now();
        let deadline = start + ATTACH_DEADLINE;
        let mut vm2 = Vm::connect("vm2", &sock("vm2"), false, 1500);
        let mut vm3 = Vm::connect("vm3", &sock("vm3"), false, 1500);
        let up = |n: &str| sw.ports().iter().any(|p| p.name == n && p.state == "up");
        let attached = wait_until(ATTACH_DEADLINE, "vm2 and vm3 up", || (up("vm2") && up("vm3")).then_some(()));
        assert!(attached.is_ok(), "{attached:?} ({} resets so far): {:#?}", flaps.load(Ordering::Relaxed), sw.ports());
        let f = frame(BCAST, mac(2), None, 64, 1);
        vm2.send(std::slice::from_ref(&f));
        assert_eq!(recv_by(&mut vm3, 1, deadline), [f], "vm2 -> vm3 during the storm");
        let g = frame(mac(2), mac(3), None, 64, 2);
        vm3.send(std::slice::from_ref(&g));
        assert_eq!(recv_by(&mut vm2, 1, deadline), [g], "vm3 -> vm2 during the storm");
        let took = start.elapsed();

        let enough = wait_until(DEADLINE, "the storm's resets", || (flaps.load(Ordering::Relaxed) >= MIN_FLAPS).then_some(()));
        stop.store(true, Ordering::Relaxed);
        flapper.join().unwrap();
        enough.unwrap();
        (took, sw.proc.output()[mark..].to_string(), vm2, vm3)
    });
    let resets = flaps.load(Ordering::Relaxed);

    // The switch said it backed the port off, and attached the flapping
    // guest a handful of times, not once per reset (each attach and each
    // detach replans every PMD thread).
    let backoffs = count(&storm, "port flap: guest reconnecting");
    let attaches = count(&storm, "port flap: guest up");
    eprintln!("{resets} resets: {attaches} attached, {backoffs} back-off(s); vm2 and vm3 up and forwarding in {took:?}");
    assert!(backoffs >= 1, "no back-off logged for {resets} resets ({attaches} attached)");
    assert!(attaches <= 4 * FLAP_LIMIT && (attaches as u32) < resets / 2, "{attaches} attaches for {resets} resets");

    // After the storm the port's guest attaches (once its back-off is over)
    // and forwards both ways.
    let mut vm1 = Vm::connect("flap", &flap_sock, false, 1500);
    sw.wait_ports("the flapping port's guest up", |ps| ps.iter().all(|p| p.state == "up"));
    let deadline = Instant::now() + DEADLINE;
    let f = frame(BCAST, mac(1), None, 64, 3);
    vm1.send(std::slice::from_ref(&f));
    assert_eq!(recv_by(&mut vm2, 1, deadline), [f], "flap -> vm2");
    let g = frame(mac(1), mac(2), None, 64, 4);
    vm2.send(std::slice::from_ref(&g));
    assert_eq!(recv_by(&mut vm1, 1, deadline), [g], "vm2 -> flap");
}
