//! A hostile guest on a copy-once port: this test speaks vhost-user itself
//! (rust-vmm's frontend), shares guest memory of its own (a tmpfs file, as
//! QEMU shares a memfd), and writes descriptors no driver would. Every bad
//! chain goes back to it with length 0 and is counted; the switch keeps
//! forwarding for two well-behaved guests; a ring whose own state is
//! impossible stops that ring only. On the way, the guest's memory table
//! changes under traffic (memory hot-added): the switch quiesces, remaps,
//! and reads a frame from the new region.
//!
//! The same frontend then plays QEMU's part in a live migration: it shares
//! a dirty log (SET_LOG_BASE, VHOST_F_LOG_ALL) and checks that the pages
//! the switch writes, and only those, are marked, and only while logging.
//!
//! This guest negotiates neither offloads nor indirect descriptors (an
//! INDIRECT descriptor is refused as not negotiated); one that negotiates
//! them and lies in its virtio-net headers and indirect tables:
//! `hostile_offloads.rs`.
mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use common::frontend::*;
use common::*;
use testbed::wait_until;
use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::VhostUserProtocolFeatures;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const MEM: usize = 4 << 20;
/// A second region, announced later (hot-added memory).
const MEM2: (u64, usize) = (0x1000_0000, 1 << 20);
const SIZE: u16 = 256;

/// A guest buffer per descriptor index and queue.
fn buf(q: usize, i: u16) -> u64 {
    0x100000 + 0x100000 * q as u64 + 0x1000 * i as u64
}

fn connect(sock: &Path, protocol: VhostUserProtocolFeatures) -> Guest {
    Guest::connect(sock, shared_memory(&[(0, MEM), MEM2]), Setup { size: SIZE, protocol, ..Setup::default() })
}

impl Guest {
    /// Announces both regions (the second one new) and, as QEMU does,
    /// waits for the switch's acknowledgement before the guest may use it.
    fn hot_add(&self) {
        let regions: Vec<_> = self.mem.iter().map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).unwrap()).collect();
        self.fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        self.fe.set_mem_table(&regions).unwrap();
        self.fe.set_hdr_flags(VhostUserHeaderFlag::empty());
    }

    /// A frame to transmit: header and frame in one buffer, descriptor `i`.
    fn transmit(&mut self, i: u16, frame: &[u8]) {
        self.transmit_at(i, buf(1, i), frame);
    }

    fn transmit_at(&mut self, i: u16, at: u64, frame: &[u8]) {
        self.mem.write_slice(&[0u8; HDR], GuestAddress(at)).unwrap();
        self.mem.write_slice(frame, GuestAddress(at + HDR as u64)).unwrap();
        self.desc(TX, i, (at, (HDR + frame.len()) as u32, 0, 0));
        self.offer(TX, i);
    }
}

/// vm1 and vm2 still reach each other, unicast both ways.
fn still_forwarding(vms: &mut [Vm], seq: u32) {
    let f = frame(mac(2), mac(1), None, 300, seq);
    vms[0].send(std::slice::from_ref(&f));
    assert_eq!(vms[1].recv(1), [f], "vm1 -> vm2 after step {seq}");
    let g = frame(mac(1), mac(2), None, 1400, seq);
    vms[1].send(std::slice::from_ref(&g));
    assert_eq!(vms[0].recv(1), [g], "vm2 -> vm1 after step {seq}");
}

fn drops(sw: &Switchd, name: &str, reason: &str) -> u64 {
    sw.port(name).drops.get(reason).copied().unwrap_or(0)
}

#[test]
fn a_hostile_guest_is_refused_and_counted_and_others_keep_forwarding() {
    let dir = tempfile::tempdir().unwrap();
    let ports = server_port("evil", "copy-once") + &server_port("vm1", "copy-once") + &server_port("vm2", "rte_vhost");
    let sw = Switchd::start(dir.path(), "", &ports);
    let mut vms: Vec<Vm> = ["vm1", "vm2"].iter().map(|n| Vm::connect(n, &dir.path().join(format!("{n}.sock")), false, 1500)).collect();
    let mut evil = connect(&dir.path().join("evil.sock"), VhostUserProtocolFeatures::REPLY_ACK);
    sw.wait_ports("all three guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let idle = sw.mempool_in_use();
    // Learn vm1 and vm2 (each broadcast also reaches the others).
    for (i, v) in [0usize, 1].into_iter().enumerate() {
        vms[v].send(&[frame(BCAST, mac(1 + i as u8), None, 60, 0)]);
        vms[1 - v].recv(1);
    }
    still_forwarding(&mut vms, 0);

    // A well-formed frame first: the frontend itself works.
    let hello = frame(BCAST, mac(7), None, 100, 1);
    evil.transmit(0, &hello);
    assert_eq!(vms[0].recv(1), std::slice::from_ref(&hello));
    assert_eq!(vms[1].recv(1), [hello]);
    evil.wait_used(1, 1);
    assert_eq!(evil.used(1, 0), (0, 0));

    // A memory-table change under traffic: hot-added memory. vm1's frames
    // keep flowing in order while the switch quiesces and remaps; then a
    // frame from a buffer in the new region is read and forwarded.
    let stream: Vec<_> = (0..128u32).map(|i| frame(mac(2), mac(1), None, 200 + i as usize, 100 + i)).collect();
    vms[0].send(&stream[..64]);
    evil.interrupted(0);
    evil.hot_add();
    vms[0].send(&stream[64..]);
    assert!(vms[1].recv(128) == stream, "vm1 -> vm2 across the other guest's memory change");
    let from_new = frame(BCAST, mac(7), None, 150, 2);
    // An interrupt the switch could not deliver while the change held
    // the queue locks is owed, not lost: a ring back from a change
    // interrupts the guest once (here its receive ring, with nothing
    // delivered to it).
    wait_until(DEADLINE, "an interrupt after the memory change", || evil.interrupted(0).then_some(())).unwrap();
    evil.transmit_at(10, MEM2.0 + 0x100, &from_new);
    assert_eq!(vms[0].recv(1), std::slice::from_ref(&from_new));
    assert_eq!(vms[1].recv(1), [from_new]);
    evil.wait_used(1, 2);

    // Every kind of bad transmit chain, then a good frame behind them.
    let b = buf(1, 20);
    evil.offer(1, SIZE + 44); // head out of range
    evil.desc(1, 1, (b, 64, NEXT, 999)); // next out of range
    evil.offer(1, 1);
    evil.desc(1, 2, (b, 64, NEXT, 3)); // a next loop
    evil.desc(1, 3, (b, 64, NEXT, 2));
    evil.offer(1, 2);
    evil.desc(1, 4, (MEM as u64 - 16, 64, 0, 0)); // past the end of memory
    evil.offer(1, 4);
    evil.desc(1, 5, (b, 64, WRITE, 0)); // a receive buffer on the transmit ring
    evil.offer(1, 5);
    evil.desc(1, 6, (b, 64, INDIRECT, 0)); // indirect, not negotiated
    evil.offer(1, 6);
    evil.desc(1, 7, (b, 8, 0, 0)); // shorter than the virtio-net header
    evil.offer(1, 7);
    evil.desc(1, 8, (b, (HDR + 10) as u32, 0, 0)); // a 10-byte frame
    evil.offer(1, 8);
    let after = frame(BCAST, mac(7), None, 200, 3);
    evil.transmit(9, &after);
    assert_eq!(vms[0].recv(1), std::slice::from_ref(&after), "the good frame behind the bad ones");
    assert_eq!(vms[1].recv(1), [after]);
    evil.wait_used(1, 11);
    let heads: Vec<u32> = (2..11).map(|i| evil.used(1, i).0).collect();
    assert_eq!(heads, [SIZE as u32 + 44, 1, 2, 4, 5, 6, 7, 8, 9], "every chain returned, in order");
    assert!((2..11).all(|i| evil.used(1, i).1 == 0), "with length 0");
    let reasons = ["bad_head", "bad_next", "chain_too_long", "outside_memory", "wrong_direction", "indirect", "bad_length", "runt"];
    for r in reasons {
        assert_eq!(drops(&sw, "evil", r), 1, "{r}: {:?}", sw.port("evil"));
    }
    still_forwarding(&mut vms, 3);

    // Bad receive chains: read-only, and outside memory. Each broadcast
    // that meets one is dropped for this guest only.
    evil.desc(0, 0, (buf(0, 0), 2048, 0, 0));
    evil.offer(0, 0);
    evil.desc(0, 1, (MEM as u64 - 100, 2048, WRITE, 0));
    evil.offer(0, 1);
    for seq in [4, 5] {
        let f = frame(BCAST, mac(1), None, 80, seq);
        vms[0].send(std::slice::from_ref(&f));
        assert_eq!(vms[1].recv(1), [f]);
    }
    evil.wait_used(0, 2);
    assert_eq!((evil.used(0, 0), evil.used(0, 1)), ((0, 0), (1, 0)));
    assert_eq!((drops(&sw, "evil", "wrong_direction"), drops(&sw, "evil", "outside_memory")), (2, 2), "{:?}", sw.port("evil"));
    // A good receive buffer gets the next one, header and frame.
    evil.desc(0, 2, (buf(0, 2), 2048, WRITE, 0));
    evil.offer(0, 2);
    let f = frame(BCAST, mac(1), None, 80, 6);
    vms[0].send(std::slice::from_ref(&f));
    assert_eq!(vms[1].recv(1), std::slice::from_ref(&f));
    evil.wait_used(0, 3);
    assert_eq!(evil.used(0, 2), (2, (HDR + f.len()) as u32));
    let mut got = vec![0u8; HDR + f.len()];
    evil.mem.read_slice(&mut got, GuestAddress(buf(0, 2))).unwrap();
    assert_eq!(got[HDR..], f[..]);

    // An avail index that jumps past the ring: that ring stops, nothing else.
    let jump = evil.avail[1].wrapping_add(SIZE + 1);
    evil.mem.write_obj(jump.to_le(), GuestAddress(evil.rings(1).1 + 2)).unwrap();
    let used = evil.used_idx(1);
    still_forwarding(&mut vms, 7);
    let start = Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(200) {
        assert_eq!(evil.used_idx(1), used, "a broken ring is not walked");
    }
    let f = frame(BCAST, mac(2), None, 90, 8);
    vms[1].send(std::slice::from_ref(&f));
    assert_eq!(vms[0].recv(1), [f], "the broken guest's neighbours still flood");

    // The hostile guest leaves; the switch is whole.
    drop(evil);
    sw.wait_ports("evil gone", |ps| ps.iter().any(|p| p.name == "evil" && p.state == "waiting"));
    still_forwarding(&mut vms, 9);
    sw.wait_ports("mempool back to idle", |_| sw.mempool_in_use() == idle);
}

/// SET_LOG_BASE with the log's fd, as QEMU sends it. DPDK replies with a
/// bare header, where rust-vmm's frontend waits for a body, so the request
/// goes out on the raw socket (the frontend has nothing in flight).
fn set_log_base(raw: &mut UnixStream, log: &std::fs::File, bytes: u64) {
    const SET_LOG_BASE: u32 = 6;
    const VERSION: u32 = 1;
    let mut msg = Vec::new();
    for v in [SET_LOG_BASE, VERSION, 16] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    msg.extend_from_slice(&bytes.to_le_bytes()); // mmap_size
    msg.extend_from_slice(&0u64.to_le_bytes()); // mmap_offset
    raw.send_with_fd(&msg[..], log.as_raw_fd()).unwrap();
    let mut reply = [0u8; 12];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(u32::from_le_bytes(reply[0..4].try_into().unwrap()), SET_LOG_BASE, "{reply:?}");
}

/// Whether the log marks the page holding `gpa` (one bit per 4 KB page,
/// QEMU's layout).
fn logged(log: &std::fs::File, gpa: u64) -> bool {
    let page = gpa / 4096;
    let mut byte = [0u8];
    log.read_exact_at(&mut byte, page / 8).unwrap();
    byte[0] & (1 << (page % 8)) != 0
}

#[test]
fn a_migrating_guest_finds_every_page_the_switch_wrote_in_its_dirty_log() {
    let dir = tempfile::tempdir().unwrap();
    // Its own name for the sender: one process, one EAL, and the other
    // test's virtio_user devices keep theirs.
    let ports = server_port("mig", "copy-once") + &server_port("peer", "copy-once");
    let sw = Switchd::start(dir.path(), "", &ports);
    let mut peer = Vm::connect("peer", &dir.path().join("peer.sock"), false, 1500);
    let mut g = connect(&dir.path().join("mig.sock"), VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::LOG_SHMFD);
    sw.wait_ports("both guests up", |ps| ps.iter().all(|p| p.state == "up"));
    for i in 0..8 {
        g.desc(0, i, (buf(0, i), 2048, WRITE, 0));
        g.offer(0, i);
    }

    // The migration starts, as QEMU starts it: the log, then LOG_ALL.
    let bytes = (MEM / 4096 / 8) as u64;
    let log = tempfile::tempfile_in("/dev/shm").unwrap();
    log.set_len(bytes).unwrap();
    set_log_base(&mut g.raw, &log, bytes);
    g.fe.set_features(VERSION_1 | PROTOCOL_FEATURES | LOG_ALL).unwrap();
    g.fe.get_features().unwrap();

    // Four frames into receive buffers 0..4 (one buffer each), the first
    // once the switch has the rings back, and one frame transmitted.
    let f = |i: u32| frame(BCAST, mac(1), None, 1000, i);
    delivered_after_change(&mut peer, &g, f(0));
    peer.send(&[f(1), f(2), f(3)]);
    g.wait_used(0, 4);
    let out = frame(BCAST, mac(9), None, 200, 9);
    g.transmit(0, &out);
    assert_eq!(peer.recv(1), [out]);
    g.wait_used(1, 1);
    for i in 0..4 {
        assert!(logged(&log, buf(0, i)), "receive buffer {i} written, not logged");
    }
    assert!(logged(&log, g.rings(0).2) && logged(&log, g.rings(1).2), "the used rings written, not logged");
    // Not the buffers still empty, not what only the guest writes, not the
    // transmitted frame's buffer (read).
    for gpa in [buf(0, 4), buf(0, 7), g.rings(0).0, g.rings(0).1, g.rings(1).1, buf(1, 0)] {
        assert!(!logged(&log, gpa), "{gpa:#x} logged, not written");
    }

    // The migration ends (or is cancelled): LOG_ALL off, nothing more logged.
    g.fe.set_features(VERSION_1 | PROTOCOL_FEATURES).unwrap();
    // As QEMU does: a reply to a later request says it was handled.
    g.fe.get_features().unwrap();
    log.write_all_at(&vec![0u8; bytes as usize], 0).unwrap();
    delivered_after_change(&mut peer, &g, f(4));
    assert!(!logged(&log, buf(0, 4)) && !logged(&log, g.rings(0).2), "logged after LOG_ALL was withdrawn");
    assert!(sw.ports().iter().all(|p| p.state == "up"), "{:?}", sw.ports());
}

/// Sends `f` until it lands in the guest's next receive buffer: after a
/// request that changes its rings, the switch takes them back on its own
/// time (frames flooded meanwhile do not reach the guest).
fn delivered_after_change(peer: &mut Vm, g: &Guest, f: Vec<u8>) {
    let want = g.used_idx(0).wrapping_add(1);
    wait_until(DEADLINE, "a frame delivered after the change", || {
        peer.send(std::slice::from_ref(&f));
        let t = Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(200) {
            if g.used_idx(0) == want {
                return Some(());
            }
        }
        None
    })
    .unwrap();
}
