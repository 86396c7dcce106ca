//! Zero copy VM to NIC with a NIC that holds what it is sent: the switch
//! runs in this process (its control loop on a thread of its own, its PMD
//! thread on lcore 1) so that its NIC can be a `net_ring` device whose wire
//! the test reads and holds, freeing the mbufs when it chooses. The guest is
//! a vhost-user frontend the test drives itself (rust-vmm's, over memory of
//! its own), so it can rewrite a buffer after sending, change its memory
//! table and disconnect while the NIC holds its buffers.
//!
//! Checked: no chain goes back to the guest before the NIC frees it, and
//! they go back in the order freed; past the in-flight bound frames are
//! copied (counted) and the ring never starves; the headers that leave are
//! the switch's copy; a memory-table change does not wait for the held
//! buffers, a disconnect waits for them up to a deadline and then gives
//! them back unsent, and the test reads their bytes after each (nothing
//! unmapped under them); the pool ends idle.
mod common;

use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use common::{eal, frame, mac, DEADLINE};
use pmd_bridge::{Burst, EthPort, Mbuf, Mempool, PortConfig, Ring, RxQueue, TxQueue};
use testbed::wait_until;
use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vswitch::config::{self, State};
use vswitch::protocol::{Command, CopiesInfo, MempoolInfo, PmdRxqInfo, PortInfo};

type Job = Box<dyn FnOnce(&mut vswitch::switch::Switch) + Send>;

/// The switch, its control loop on a thread; stopped cleanly on drop.
struct Sw {
    jobs: Sender<Option<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Sw {
    /// A switch whose NIC is `Wire::new(tag)`'s (each test its own names).
    fn start(dir: &Path, tag: &'static str) -> Sw {
        // net_virtio_user asks for IN_ORDER, whose guests' chains are not lent.
        let text = format!(
            "[switch]\npmd_cores = [1]\nmain_core = 0\ncontrol_socket = \"{0}/ctl.sock\"\nsocket_dir = \"{0}\"\n\
             zero_copy_in_flight = 4\nzero_copy_min_bytes = 256\n\
             [[port]]\nname = \"nic\"\ntype = \"dpdk\"\ndevargs = \"net_ring_{tag}\"\n\
             [[port]]\nname = \"vm\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"vm.sock\"\ndatapath = \"copy-once\"\nin_order = false\n",
            dir.display()
        );
        let cfg = config::parse(&text, &dir.join("switch.toml")).unwrap();
        let eal = eal().0.clone();
        let (jobs, rx) = channel::<Option<Job>>();
        let (up, started) = channel();
        let thread = std::thread::spawn(move || {
            let pool = Arc::new(Mempool::new(&eal, &format!("{tag}_sw"), 8191, 0, 2048).unwrap());
            let mut sw = vswitch::switch::Switch::start(eal, cfg, State::default(), pool).unwrap_or_else(|e| panic!("{e}"));
            up.send(()).unwrap();
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(1)) {
                    Ok(Some(job)) => job(&mut sw),
                    Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(_) => {}
                }
                sw.poll_events();
                sw.tick();
            }
            sw.shutdown();
        });
        started.recv_timeout(DEADLINE).expect("the switch started");
        Sw { jobs, thread: Some(thread) }
    }

    fn ctl<T: serde::de::DeserializeOwned>(&self, cmd: Command) -> T {
        let (tx, rx) = channel();
        self.jobs.send(Some(Box::new(move |sw| tx.send(sw.handle(cmd)).unwrap()))).unwrap();
        let r = rx.recv_timeout(DEADLINE).expect("the control loop answers");
        assert!(r.ok, "{:?}", r.error);
        serde_json::from_value(r.result).unwrap()
    }

    fn port(&self, name: &str) -> PortInfo {
        self.ctl::<Vec<PortInfo>>(Command::ShowPorts).into_iter().find(|p| p.name == name).unwrap()
    }

    fn in_use(&self) -> u32 {
        self.ctl::<MempoolInfo>(Command::ShowMempool).in_use
    }

    fn wait(&self, what: &str, cond: impl Fn(&Sw) -> bool) {
        wait_until(DEADLINE, what, || cond(self).then_some(())).unwrap_or_else(|e| panic!("{e}: {:?}", self.ctl::<Vec<PortInfo>>(Command::ShowPorts)));
    }
}

impl Drop for Sw {
    fn drop(&mut self) {
        let _ = self.jobs.send(None);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The switch's NIC: a ring device it opens by name, and the test's port
/// on the other ends of its rings (what the switch sends, the test reads).
/// Fields drop in order: queues, port, then the rings.
struct Wire {
    rx: RxQueue,
    tx: TxQueue,
    _port: EthPort,
    _rings: [Arc<Ring>; 2],
}

impl Wire {
    fn new(tag: &str) -> Wire {
        let (eal, pool) = eal();
        let ring = |n: &str| Arc::new(Ring::new(eal, &format!("{tag}_{n}"), 1024).unwrap());
        let (out, inbound) = (ring("out"), ring("in"));
        let name = EthPort::ring_device(tag, &[Arc::clone(&inbound)], &[Arc::clone(&out)]).unwrap();
        assert_eq!(name, format!("net_ring_{tag}"), "the devargs in Sw::start");
        let mut port = EthPort::from_rings(eal, &format!("{tag}w"), &[Arc::clone(&out)], &[Arc::clone(&inbound)]).unwrap();
        port.configure(&PortConfig::default(), Arc::clone(pool)).unwrap();
        port.start().unwrap();
        Wire { rx: port.rx_queue(0).unwrap(), tx: port.tx_queue(0).unwrap(), _port: port, _rings: [out, inbound] }
    }

    fn send(&mut self, f: &[u8]) {
        let mut b = Burst::<32>::new();
        b.push(common::pool().alloc_from(f).unwrap()).unwrap();
        assert_eq!(self.tx.tx_burst(&mut b), 1);
    }

    /// Waits until `n` frames left the switch; holds them.
    fn take(&mut self, n: usize) -> Vec<Mbuf> {
        let mut got = Vec::new();
        let mut b = Burst::<32>::new();
        wait_until(DEADLINE, "frames on the wire", || {
            self.rx.rx_burst(&mut b);
            got.extend(b.drain());
            (got.len() >= n).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {} of {n}", got.len()));
        assert_eq!(got.len(), n);
        got
    }
}

const MEM: usize = 4 << 20;
/// Memory announced later (hot-added).
const MEM2: (u64, usize) = (0x1000_0000, 1 << 20);
const SIZE: u16 = 256;
const HDR: usize = 12;
const VERSION_1: u64 = 1 << 32;
const PROTOCOL_FEATURES: u64 = 1 << 30;

/// (desc, avail, used) of virtqueue `q` (rx = 0, tx = 1).
fn rings(q: usize) -> (u64, u64, u64) {
    let base = 0x10000 * q as u64;
    (base, base + 0x1000, base + 0x2000)
}

/// The guest: a frontend over memory of its own.
struct Guest {
    fe: Frontend,
    mem: GuestMemoryMmap,
    avail: u16,
    _fds: Vec<EventFd>,
}

impl Guest {
    fn connect(sock: &Path) -> Guest {
        let shm = |len: usize| {
            let f = tempfile::tempfile_in("/dev/shm").unwrap();
            f.set_len(len as u64).unwrap();
            Some(FileOffset::new(f, 0))
        };
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(GuestAddress(0), MEM, shm(MEM)), (GuestAddress(MEM2.0), MEM2.1, shm(MEM2.1))]).unwrap();
        let host = mem.iter().next().unwrap().as_ptr() as u64;
        let stream = wait_until(DEADLINE, "the switch's socket", || std::os::unix::net::UnixStream::connect(sock).ok()).unwrap();
        let mut fe = Frontend::from_stream(stream, 2);
        fe.set_owner().unwrap();
        fe.get_features().unwrap();
        fe.set_features(VERSION_1 | PROTOCOL_FEATURES).unwrap();
        fe.get_protocol_features().unwrap();
        fe.set_protocol_features(VhostUserProtocolFeatures::REPLY_ACK).unwrap();
        fe.set_mem_table(&[VhostUserMemoryRegionInfo::from_guest_region(mem.iter().next().unwrap()).unwrap()]).unwrap();
        let mut fds = Vec::new();
        for q in 0..2 {
            let (desc, avail, used) = rings(q);
            fe.set_vring_num(q, SIZE).unwrap();
            let cfg = VringConfigData {
                queue_max_size: SIZE,
                queue_size: SIZE,
                flags: 0,
                desc_table_addr: host + desc,
                used_ring_addr: host + used,
                avail_ring_addr: host + avail,
                log_addr: None,
            };
            fe.set_vring_addr(q, &cfg).unwrap();
            fe.set_vring_base(q, 0).unwrap();
            let (kick, call) = (EventFd::new(libc::EFD_NONBLOCK).unwrap(), EventFd::new(libc::EFD_NONBLOCK).unwrap());
            fe.set_vring_kick(q, &kick).unwrap();
            fe.set_vring_call(q, &call).unwrap();
            fds.extend([kick, call]);
        }
        for q in 0..2 {
            fe.set_vring_enable(q, true).unwrap();
        }
        Guest { fe, mem, avail: 0, _fds: fds }
    }

    /// Where transmit chain `head`'s buffer is (`at_new`: in the hot-added region).
    fn buf(head: u16, at_new: bool) -> u64 {
        if at_new {
            MEM2.0 + 0x1000 * head as u64
        } else {
            0x100000 + 0x1000 * head as u64
        }
    }

    /// Transmits `f` in chain `head`, header and frame in one buffer.
    fn send(&mut self, head: u16, f: &[u8], at_new: bool) {
        let at = Self::buf(head, at_new);
        self.mem.write_slice(&[0u8; HDR], GuestAddress(at)).unwrap();
        self.mem.write_slice(f, GuestAddress(at + HDR as u64)).unwrap();
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&at.to_le_bytes());
        d[8..12].copy_from_slice(&((HDR + f.len()) as u32).to_le_bytes());
        self.mem.write_slice(&d, GuestAddress(rings(1).0 + 16 * head as u64)).unwrap();
        let avail = rings(1).1;
        self.mem.write_obj(head.to_le(), GuestAddress(avail + 4 + 2 * (self.avail % SIZE) as u64)).unwrap();
        self.avail = self.avail.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem.write_obj(self.avail.to_le(), GuestAddress(avail + 2)).unwrap();
    }

    fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(rings(1).2 + 2)).unwrap())
    }

    /// The heads of transmit used entries `from..to`.
    fn used_heads(&self, from: u16, to: u16) -> Vec<u16> {
        (from..to).map(|i| u32::from_le(self.mem.read_obj(GuestAddress(rings(1).2 + 4 + 8 * (i % SIZE) as u64)).unwrap()) as u16).collect()
    }

    fn wait_used(&self, n: u16) {
        wait_until(DEADLINE, "used entries", || (self.used_idx() == n).then_some(())).unwrap_or_else(|e| panic!("{e}: used idx {}", self.used_idx()));
    }

    /// Announces both regions, the second new, waiting for the switch's
    /// acknowledgement (as QEMU does).
    fn hot_add(self) -> Guest {
        let regions: Vec<_> = self.mem.iter().map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).unwrap()).collect();
        self.fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        self.fe.set_mem_table(&regions).unwrap();
        self.fe.set_hdr_flags(VhostUserHeaderFlag::empty());
        self
    }
}

/// A switch (names after `tag`) with its NIC and a guest up, and a host
/// `mac(0x50)` behind the NIC learned, so the guest's frames to it are
/// unicast; and the pool's use at that point.
fn setup(dir: &Path, tag: &'static str) -> (Wire, Sw, Guest, u32) {
    let mut wire = Wire::new(tag);
    let sw = Sw::start(dir, tag);
    let g = Guest::connect(&dir.join("vm.sock"));
    sw.wait("the guest up", |sw| sw.port("vm").state == "up");
    let idle = sw.in_use();
    wire.send(&frame(mac(1), mac(0x50), None, 60, 0));
    sw.wait("the host learned", |sw| sw.port("nic").rx_packets == 1);
    (wire, sw, g, idle)
}

#[test]
fn a_nic_that_holds_a_guests_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wire, sw, mut g, idle) = setup(dir.path(), "held");
    let host = mac(0x50);

    // Twelve frames with four lendable at once: 0-3 lent and held, 4-11
    // copied (in_flight_limit) and back at once; the ring does not starve.
    let frames: Vec<Vec<u8>> = (0..12u32).map(|i| frame(host, mac(1), None, 1000, 1 + i)).collect();
    for (h, f) in frames.iter().enumerate() {
        g.send(h as u16, f, false);
    }
    let mut held = wire.take(12);
    assert_eq!(held.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), frames, "intact, in order");
    g.wait_used(8);
    assert_eq!(g.used_heads(0, 8), (4..12).collect::<Vec<_>>(), "nothing lent is back before the NIC frees it");
    assert_eq!(sw.port("vm").lent_to_nics, 4);
    let c: CopiesInfo = sw.ctl(Command::ShowCopies);
    assert_eq!((c.zero_copy["lent"], c.zero_copy["in_flight_limit"]), (4, 8), "{c:?}");
    let vm_nic = c.paths.iter().find(|p| p.path == "vm-nic").unwrap();
    assert_eq!(vm_nic.payload_copies, 8, "the lent frames: none");

    // The guest rewrites a buffer it sent: the headers that leave are the
    // switch's copy; the payload is the guest's own (nothing was copied).
    g.mem.write_slice(&[0xee; 1000], GuestAddress(Guest::buf(0, false) + HDR as u64)).unwrap();
    let out = held[0].to_vec();
    assert_eq!(out[..64], frames[0][..64]);
    assert_eq!(out[64..], [0xee; 936]);

    // Freed 2, 0, 3, 1: returned to the guest in that order.
    let mut used = 8;
    for k in [2u16, 0, 3, 1] {
        drop(std::mem::replace(&mut held[k as usize], common::pool().alloc().unwrap()));
        used += 1;
        g.wait_used(used);
        assert_eq!(g.used_heads(used - 1, used), [k]);
    }
    drop(held);
    sw.wait("nothing lent", |sw| sw.port("vm").lent_to_nics == 0);

    // The memory table changes while the NIC holds two chains: the change
    // does not wait for them (the NIC reads them through the switch's own
    // mapping), their bytes stay readable, they go back once freed (into
    // the rings as the new table maps them), then the new memory works.
    let more: Vec<Vec<u8>> = (0..2u32).map(|i| frame(host, mac(1), None, 1400, 50 + i)).collect();
    g.send(12, &more[0], false);
    g.send(13, &more[1], false);
    let held = wire.take(2);
    let mut g = g.hot_add();
    let polled = |sw: &Sw| sw.ctl::<Vec<PmdRxqInfo>>(Command::ShowPmdRxq).iter().any(|p| p.rxqs.iter().any(|q| q.port == "vm"));
    sw.wait("the guest's rings polled again after the change", polled);
    assert_eq!(held.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), more, "still mapped under the held buffers");
    assert_eq!((sw.port("vm").lent_to_nics, g.used_idx()), (2, 12), "nothing back before the NIC frees it");
    drop(held);
    g.wait_used(14);
    let from_new = frame(host, mac(1), None, 1200, 60);
    g.send(14, &from_new, true);
    let held = wire.take(1);
    assert_eq!(held[0].to_vec(), from_new, "lent from the hot-added region");
    drop(held);
    g.wait_used(15);

    // The guest disconnects while the NIC holds two chains: its ring
    // indices are handed back only once they are returned.
    g.send(15, &more[0], true);
    g.send(16, &more[1], true);
    let held = wire.take(2);
    let Guest { fe, mem, _fds, .. } = g;
    drop(fe);
    sw.wait("the guest gone", |sw| sw.port("vm").state == "waiting");
    assert_eq!(held.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), more, "still mapped after the disconnect");
    drop(held);
    let used = || u16::from_le(mem.read_obj(GuestAddress(rings(1).2 + 2)).unwrap());
    wait_until(DEADLINE, "the held chains returned to the departed guest", || (used() == 17).then_some(())).unwrap();

    // A guest comes back on the socket: it sends as before.
    let mut g = Guest::connect(&dir.path().join("vm.sock"));
    sw.wait("a guest up again", |sw| sw.port("vm").state == "up");
    g.send(0, &from_new, false);
    assert_eq!(wire.take(1)[0].to_vec(), from_new);
    g.wait_used(1);
    sw.wait("the pool idle again", |sw| sw.in_use() == idle);
}

/// Before: the departed guest's device waited in rte_vhost's destroy_device
/// for the buffers a NIC held, and after 10 s rte_vhost's wait ended the
/// whole switch (abort).
#[test]
fn regression_a_nic_that_keeps_a_departed_guests_buffers_does_not_end_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wire, sw, mut g, idle) = setup(dir.path(), "kept");
    let host = mac(0x50);

    // The guest goes while the NIC holds two chains and never frees them in
    // time (a NIC whose link is down): past the switch's deadline they are
    // given back to it unsent, so that its device can go, and the NIC reads
    // on from the switch's own mapping, even once the guest's memory is gone.
    let frames: Vec<Vec<u8>> = (0..2u32).map(|i| frame(host, mac(1), None, 1400, 50 + i)).collect();
    g.send(0, &frames[0], false);
    g.send(1, &frames[1], false);
    let held = wire.take(2);
    let Guest { fe, mem, _fds, .. } = g;
    drop(fe);
    let used = || u16::from_le(mem.read_obj(GuestAddress(rings(1).2 + 2)).unwrap());
    wait_until(DEADLINE, "the held chains given back unsent", || (used() == 2).then_some(())).unwrap();
    sw.wait("the guest gone", |sw| sw.port("vm").state == "waiting");
    drop((mem, _fds));
    assert_eq!(held.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), frames, "readable after the guest and its memory went");

    // The switch forwards on: a new guest on the socket sends as before.
    let mut g = Guest::connect(&dir.path().join("vm.sock"));
    sw.wait("a guest up again", |sw| sw.port("vm").state == "up");
    g.send(0, &frames[0], false);
    assert_eq!(wire.take(1)[0].to_vec(), frames[0]);
    g.wait_used(1);
    drop(held);
    sw.wait("the pool idle again", |sw| sw.in_use() == idle);
}
