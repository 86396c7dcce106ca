//! vhost-user ports through the `rte_vhost` library API (not the net_vhost PMD).
//!
//! # Threads and locks (read in lib/vhost of DPDK 22.11.11)
//! rte_vhost runs its device callbacks on its own threads ("vhost-events",
//! and "vhost_reconn" for client sockets). For SET_FEATURES,
//! SET_PROTOCOL_FEATURES, SET_OWNER, SET_MEM_TABLE, SET_LOG_BASE/FD,
//! SET_VRING_NUM/ADDR/BASE/KICK/CALL/ERR/ENABLE, SEND_RARP, NET_SET_MTU and
//! SET_SLAVE_REQ_FD it takes every queue's access lock *before* the extern
//! pre-hook and the handler, and calls `vring_state_changed` (and
//! `features_changed`) before releasing them. `rte_vhost_enqueue_burst`,
//! `rte_vhost_vring_call` and `rte_vhost_enable_guest_notification` take
//! that lock and spin on it; `rte_vhost_dequeue_burst` and
//! `rte_vhost_vring_call_nonblock` only try it. Hence:
//! - `vring_state_changed`, `features_changed` and the message hooks must not
//!   call any of those functions, nor wait for a thread that may be spinning
//!   inside them: here they only record an event for another thread.
//! - `new_device` and the connection callbacks run with no queue lock held;
//!   here they too only record an event.
//! - `destroy_device` runs with no queue lock held (on disconnect, on
//!   GET_VRING_BASE and RESET_OWNER, and inside `rte_vhost_driver_unregister`
//!   on the caller's thread). When it returns, the library unmaps guest
//!   memory and frees the queues, and its data path does not guard against a
//!   freed device, so no thread may still be inside enqueue or dequeue. Here
//!   it records the event and then waits until every handle to the device
//!   (`VhostDevice`, `VhostRxQueue`, `VhostTxQueue`) is dropped: the thread
//!   that reads the events must make the threads holding handles drop them.
//! - A socket whose rings the caller walks itself (`set_features`) also gets
//!   pre/post message hooks: before a request that remaps memory or moves
//!   rings (SET_MEM_TABLE, SET_VRING_*, SET_FEATURES, SET_LOG_BASE) the pre
//!   hook records `RingsChanging` and waits until every `GuestMemory` of the
//!   device is dropped; the post hook records `RingsChanged`. In between,
//!   `guest_memory` refuses (a `RingsChanged` still queued from an earlier
//!   request must not map what this one is replacing). The queue locks are
//!   held meanwhile, which is why the own-ring datapath may only ever try
//!   them (`call_nonblock`).
//! - Frames lent to NICs point into a mapping of the switch's own
//!   (`lend_map`), not rte_vhost's: neither wait above depends on a NIC,
//!   which may hold buffers for as long as its link is down.
//! - Handles are obtained from the socket by vid after a `NewDevice` event;
//!   a vid whose device is gone gives none, so a stale (or reused) vid is
//!   never used.
use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::burst::Burst;
use crate::guest_mem::GuestMemory;
use crate::lend_map::{LendMap, MappedRegion};
use crate::error::{cstring, Error, Result};
use crate::mempool::Mempool;
use crate::{ffi, log, Eal};

/// Which side of the vhost-user socket the switch takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VhostMode {
    /// The switch creates and listens on the socket; QEMU connects.
    Server,
    /// QEMU listens; the switch connects, and reconnects whenever QEMU returns.
    Client,
}

/// What rte_vhost reported about a socket's device, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VhostEvent {
    /// A frontend connected (negotiation starts).
    NewConnection { vid: i32 },
    /// The device is ready: `VhostSocket::device(vid)` gives its handle.
    NewDevice { vid: i32 },
    /// The frontend enabled or disabled one vring (virtio queue index).
    VringState { vid: i32, queue: u16, enabled: bool },
    /// Negotiated features changed (e.g. LOG_ALL around live migration).
    FeaturesChanged { vid: i32, features: u64 },
    /// (Own-ring sockets) rte_vhost is about to remap memory or move rings:
    /// drop every `GuestMemory` of the device now; the request waits.
    RingsChanging { vid: i32, request: u32 },
    /// (Own-ring sockets) that request is done: take memory and rings anew.
    RingsChanged { vid: i32, request: u32 },
    /// (Own-ring sockets) after a migration the frontend asks the backend to
    /// announce the guest (RARP); rte_vhost's datapath would have, ours must.
    RarpRequested { vid: i32 },
    /// The device is going away; drop every handle to it now.
    DestroyDevice { vid: i32 },
    /// The frontend disconnected.
    DestroyConnection { vid: i32 },
}

mod callbacks;

use callbacks::{DeviceLease, SocketShared, OPS, SOCKETS};

/// A registered vhost-user socket. Dropping it unregisters the socket;
/// drop every device handle first, or it stays registered (see above).
pub struct VhostSocket {
    path: String,
    cpath: std::ffi::CString,
    shared: Arc<SocketShared>,
    events: Receiver<VhostEvent>,
    _eal: Eal,
}

impl VhostSocket {
    /// Registers `path` in `mode` with the library's default features
    /// (mergeable rx buffers included) and the device callbacks. Call
    /// `start` after adjusting features.
    #[cold]
    pub fn register(eal: &Eal, path: &str, mode: VhostMode) -> Result<VhostSocket> {
        let cpath = cstring("socket path", path)?;
        let flags = match mode {
            VhostMode::Server => 0,
            VhostMode::Client => ffi::RTE_VHOST_USER_CLIENT as u64,
        };
        {
            let sockets = SOCKETS.lock().unwrap();
            if sockets.iter().any(|(p, _)| p == path) {
                return Err(Error::InvalidArgument(format!("vhost socket {path} is already registered")));
            }
        }
        // SAFETY: cpath is a valid C string; the library copies it.
        let (r, logged) = log::capture(|| unsafe { ffi::rte_vhost_driver_register(cpath.as_ptr(), flags) });
        if r != 0 {
            return Err(Error::dpdk("rte_vhost_driver_register", libc::EINVAL, &logged));
        }
        // From here on, Drop unregisters.
        let (tx, rx) = channel();
        let shared = Arc::new(SocketShared {
            events: Mutex::new(tx),
            owns_rings: std::sync::atomic::AtomicBool::new(false),
            devices: Mutex::new(HashMap::new()),
        });
        SOCKETS.lock().unwrap().push((path.to_string(), Arc::clone(&shared)));
        let sock = VhostSocket { path: path.to_string(), cpath, shared, events: rx, _eal: eal.clone() };
        // SAFETY: OPS is 'static; the path was registered just above.
        let (r, logged) = log::capture(|| unsafe { ffi::rte_vhost_driver_callback_register(sock.cpath.as_ptr(), &OPS.0) });
        if r != 0 {
            return Err(Error::dpdk("rte_vhost_driver_callback_register", libc::EINVAL, &logged));
        }
        Ok(sock)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The feature bits offered to the frontend.
    pub fn features(&self) -> Result<u64> {
        let mut f = 0u64;
        // SAFETY: f is a valid out-parameter; the path is registered.
        let r = unsafe { ffi::rte_vhost_driver_get_features(self.cpath.as_ptr(), &mut f) };
        if r != 0 {
            return Err(Error::dpdk("rte_vhost_driver_get_features", libc::EINVAL, ""));
        }
        Ok(f)
    }

    /// Offers `bits` in addition (before `start`).
    pub fn enable_features(&self, bits: u64) -> Result<()> {
        // SAFETY: the path is registered.
        let (r, l) = log::capture(|| unsafe { ffi::rte_vhost_driver_enable_features(self.cpath.as_ptr(), bits) });
        (r == 0).then_some(()).ok_or_else(|| Error::dpdk("rte_vhost_driver_enable_features", libc::EINVAL, &l))
    }

    /// Stops offering `bits` (before `start`).
    pub fn disable_features(&self, bits: u64) -> Result<()> {
        // SAFETY: the path is registered.
        let (r, l) = log::capture(|| unsafe { ffi::rte_vhost_driver_disable_features(self.cpath.as_ptr(), bits) });
        (r == 0).then_some(()).ok_or_else(|| Error::dpdk("rte_vhost_driver_disable_features", libc::EINVAL, &l))
    }

    /// Offers exactly `bits` (before `start`). This also switches rte_vhost's
    /// own enqueue/dequeue off for the socket: its rings are the caller's,
    /// and the message hooks that guard `GuestMemory` are installed on
    /// every connection.
    pub fn set_features(&self, bits: u64) -> Result<()> {
        self.shared.owns_rings.store(true, Ordering::Relaxed);
        // SAFETY: the path is registered.
        let (r, l) = log::capture(|| unsafe { ffi::rte_vhost_driver_set_features(self.cpath.as_ptr(), bits) });
        (r == 0).then_some(()).ok_or_else(|| Error::dpdk("rte_vhost_driver_set_features", libc::EINVAL, &l))
    }

    /// Starts listening (server) or connecting (client). A server socket
    /// is created 0600 (the umask is 0177 while rte_vhost binds it), so it
    /// is never open to others before its owner and mode are set.
    #[cold]
    pub fn start(&self) -> Result<()> {
        // SAFETY: umask only swaps the process's mask; the old one is put
        // back below. Files another thread creates meanwhile get 0177 at
        // worst: more private, never less.
        let old = unsafe { libc::umask(0o177) };
        // SAFETY: the path is registered with callbacks.
        let (r, l) = log::capture(|| unsafe { ffi::rte_vhost_driver_start(self.cpath.as_ptr()) });
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        (r == 0).then_some(()).ok_or_else(|| Error::dpdk("rte_vhost_driver_start", libc::EINVAL, &l))
    }

    /// The next event, if one is waiting.
    pub fn try_event(&self) -> Option<VhostEvent> {
        self.events.try_recv().ok()
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<VhostEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The handle of live device `vid`; None once its destruction began.
    pub fn device(&self, vid: i32) -> Option<VhostDevice> {
        let devs = self.shared.devices.lock().ok()?;
        let owns_rings = self.shared.owns_rings.load(Ordering::Relaxed);
        devs.get(&vid).map(|l| VhostDevice { lease: Arc::clone(l), owns_rings })
    }
}

impl Drop for VhostSocket {
    fn drop(&mut self) {
        let busy = self.shared.devices.lock().map(|d| d.values().any(|l| Arc::strong_count(l) > 1));
        if busy.unwrap_or(true) {
            // Unregistering runs destroy_device on this thread, which would
            // wait forever for handles this thread may hold: leave it be.
            eprintln!("pmd-bridge: vhost socket {} dropped while device handles are alive; not unregistered", self.path);
            return;
        }
        // SAFETY: the path is registered and no device handle is alive, so the
        // destroy_device this may run returns at once.
        unsafe { ffi::rte_vhost_driver_unregister(self.cpath.as_ptr()) };
        if let Ok(mut s) = SOCKETS.lock() {
            s.retain(|(p, _)| *p != self.path);
        }
    }
}

/// A live vhost device. While any handle exists, rte_vhost's destroy_device
/// for it waits, so the vid stays valid.
pub struct VhostDevice {
    lease: Arc<DeviceLease>,
    owns_rings: bool,
}

impl VhostDevice {
    pub fn vid(&self) -> i32 {
        self.lease.vid
    }

    pub fn negotiated_features(&self) -> Result<u64> {
        let mut f = 0u64;
        // SAFETY: a live vid; f is a valid out-parameter.
        match unsafe { ffi::rte_vhost_get_negotiated_features(self.vid(), &mut f) } {
            0 => Ok(f),
            _ => Err(Error::dpdk("rte_vhost_get_negotiated_features", libc::ENODEV, "")),
        }
    }

    /// Queue pairs the device has (each an rx and a tx vring).
    pub fn queue_pairs(&self) -> u16 {
        // SAFETY: a live vid.
        unsafe { ffi::rte_vhost_get_vring_num(self.vid()) / 2 }
    }

    /// The MTU the frontend set, if it negotiated VIRTIO_NET_F_MTU.
    pub fn mtu(&self) -> Option<u16> {
        let mut mtu = 0u16;
        // SAFETY: a live vid; mtu is a valid out-parameter.
        (unsafe { ffi::rte_vhost_get_mtu(self.vid(), &mut mtu) } == 0).then_some(mtu)
    }

    /// The handle to receive from the guest on queue pair `pair` (its tx vring).
    pub fn rx_queue(&self, pair: u16) -> VhostRxQueue {
        VhostRxQueue { lease: Arc::clone(&self.lease), vring: pair * 2 + 1 }
    }

    /// The handle to send to the guest on queue pair `pair` (its rx vring).
    pub fn tx_queue(&self, pair: u16) -> VhostTxQueue {
        VhostTxQueue { lease: Arc::clone(&self.lease), vring: pair * 2 }
    }
}

/// One vring as rte_vhost has it: host addresses of its three parts, its
/// size, and the indices to resume from. With VIRTIO_F_RING_PACKED the
/// parts are the descriptor ring, the driver area and the device area (in
/// `desc`, `avail`, `used`), and each index is a slot with the wrap
/// counter in bit 15, as `set_vring_base` takes them back.
#[derive(Debug)]
pub struct VringInfo {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub size: u16,
    pub last_avail: u16,
    pub last_used: u16,
    /// The eventfd that interrupts the guest for this ring (the frontend's
    /// SET_VRING_CALL), if it gave one: rte_vhost's own call decides with
    /// EVENT_IDX from ring indices only its datapath keeps, so a caller
    /// that walks the ring itself signals this directly.
    pub call: Option<CallFd>,
    /// Our duplicate of the eventfd the guest kicks on this ring (its
    /// SET_VRING_KICK), if it gave one: what a sleeping PMD thread waits on.
    pub kick: Option<crate::eventfd::EventFd>,
}

/// Our own duplicate of a vring's call eventfd: it stays valid after
/// rte_vhost closes its copy (a new SET_VRING_CALL, the device going), when
/// a signal on it reaches no one, harmlessly.
#[derive(Debug)]
pub struct CallFd(crate::eventfd::EventFd);

impl CallFd {
    /// Interrupts the guest: adds 1 to the eventfd. Never blocks (an
    /// eventfd write blocks only at a count of 2^64-1, which a reader
    /// resets long before); false if the write failed.
    #[inline]
    pub fn signal(&self) -> bool {
        self.0.signal()
    }
}

impl VhostDevice {
    /// The guest's memory, mapped for as long as the returned value lives:
    /// it holds this device's lease (destroy_device, after which rte_vhost
    /// unmaps, waits for it) and its memory token (the pre-message hook of a
    /// socket that owns its rings waits for it before SET_MEM_TABLE and the
    /// other requests that remap memory or move rings; drop it on
    /// `RingsChanging`). Refused while such a request is being handled (take
    /// it on the `RingsChanged` that follows), and on a socket without
    /// `set_features`, where no hook guards the mapping.
    pub fn guest_memory(&self) -> Result<GuestMemory> {
        if !self.owns_rings {
            return Err(Error::InvalidArgument("guest memory of a socket whose rings rte_vhost owns".into()));
        }
        // The token first, then the flag (see `hook_pre`): either the hook
        // waits for this token, or this sees the change and backs off.
        let token = Arc::clone(&self.lease.mem);
        fence(Ordering::SeqCst);
        if self.lease.changing.load(Ordering::Relaxed) {
            return Err(Error::InvalidArgument("guest memory while the frontend changes it (retry on RingsChanged)".into()));
        }
        let mut mem: *mut ffi::rte_vhost_memory = std::ptr::null_mut();
        // SAFETY: a live vid; rte_vhost mallocs a copy of its table into mem.
        if unsafe { ffi::rte_vhost_get_mem_table(self.vid(), &mut mem) } != 0 || mem.is_null() {
            return Err(Error::dpdk("rte_vhost_get_mem_table", libc::ENODEV, ""));
        }
        // SAFETY: mem points at nregions regions (malloc'd by rte_vhost, ours
        // to free); the mappings and fds they name stay until destroy_device
        // or a table change, both of which wait for the token taken above.
        unsafe {
            let n = (*mem).nregions as usize;
            let table = (*mem).regions.as_slice(n);
            let regions: Vec<(u64, u64, *mut u8)> = table.iter().map(|r| (r.guest_phys_addr, r.size, r.host_user_addr as *mut u8)).collect();
            let mapped: Vec<MappedRegion> = table
                .iter()
                .map(|r| MappedRegion { host: r.host_user_addr as usize, len: r.size as usize, mmap_addr: r.mmap_addr as usize, mmap_size: r.mmap_size as usize, fd: r.fd })
                .collect();
            libc::free(mem.cast());
            let lend = LendMap::map(&mapped).map_err(|e| eprintln!("pmd-bridge: vhost device {}: its memory is copied, never lent: mapping it: {e}", self.vid()));
            let keep = (Arc::clone(&self.lease), token);
            Ok(GuestMemory::from_mapped(&regions, self.dirty_log(), lend.ok(), Box::new(keep)))
        }
    }

    /// Which memory the frontend shares: the backing file (device, inode)
    /// of its first region, folded into one word. A new QEMU process shares
    /// new files, so this tells a guest that outlived a switch restart from
    /// a new one on the same socket.
    pub fn memory_id(&self) -> Result<u64> {
        let mut mem: *mut ffi::rte_vhost_memory = std::ptr::null_mut();
        // SAFETY: a live vid; rte_vhost mallocs a copy of its table into mem.
        if unsafe { ffi::rte_vhost_get_mem_table(self.vid(), &mut mem) } != 0 || mem.is_null() {
            return Err(Error::dpdk("rte_vhost_get_mem_table", libc::ENODEV, ""));
        }
        // SAFETY: mem points at nregions regions, malloc'd by rte_vhost and
        // ours to free; a region's fd stays open while it is mapped.
        let fd = unsafe {
            let fd = (*mem).regions.as_slice((*mem).nregions as usize).first().map(|r| r.fd);
            libc::free(mem.cast());
            fd
        };
        let fd = fd.ok_or_else(|| Error::InvalidArgument("guest memory without regions".into()))?;
        // SAFETY: a stat is plain integers, for which all zeros is a value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes only the buffer it is given; a bad fd is an
        // error, never a fault.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(Error::InvalidArgument(format!("fstat of a memory region's fd: {}", std::io::Error::last_os_error())));
        }
        Ok(st.st_dev.rotate_left(40) ^ st.st_ino)
    }

    /// The dirty-page log QEMU set up for a live migration, while LOG_ALL is
    /// negotiated: (address, bytes). It is unmapped only by SET_LOG_BASE or
    /// with the device, and both wait for the memory token, like the memory.
    fn dirty_log(&self) -> Option<(*mut u8, u64)> {
        const LOG_ALL: u64 = 1 << 26;
        if self.negotiated_features().ok()? & LOG_ALL == 0 {
            return None;
        }
        let (mut base, mut size) = (0u64, 0u64);
        // SAFETY: a live vid; plain out-parameters.
        let r = unsafe { ffi::rte_vhost_get_log_base(self.vid(), &mut base, &mut size) };
        (r == 0 && base != 0 && size != 0).then_some((base as *mut u8, size))
    }

    /// Where vring `idx` is and where to resume it.
    pub fn vring(&self, idx: u16) -> Result<VringInfo> {
        let mut v = std::mem::MaybeUninit::<ffi::rte_vhost_vring>::zeroed();
        let (mut la, mut lu) = (0u16, 0u16);
        // SAFETY: a live vid; v and the indices are valid out-parameters.
        unsafe {
            if ffi::rte_vhost_get_vhost_vring(self.vid(), idx, v.as_mut_ptr()) != 0 {
                return Err(Error::dpdk("rte_vhost_get_vhost_vring", libc::EINVAL, ""));
            }
            if ffi::rte_vhost_get_vring_base(self.vid(), idx, &mut la, &mut lu) != 0 {
                return Err(Error::dpdk("rte_vhost_get_vring_base", libc::EINVAL, ""));
            }
            let v = v.assume_init();
            Ok(VringInfo {
                desc: v.__bindgen_anon_1.desc as u64,
                avail: v.__bindgen_anon_2.avail as u64,
                used: v.__bindgen_anon_3.used as u64,
                size: v.size,
                last_avail: la,
                last_used: lu,
                call: crate::eventfd::EventFd::dup(v.callfd).map(CallFd),
                kick: crate::eventfd::EventFd::dup(v.kickfd),
            })
        }
    }

    /// Hands our ring indices back (before the device goes, so that QEMU's
    /// GET_VRING_BASE reply resumes where we stopped).
    pub fn set_vring_base(&self, idx: u16, last_avail: u16, last_used: u16) -> Result<()> {
        // SAFETY: a live vid; plain values.
        match unsafe { ffi::rte_vhost_set_vring_base(self.vid(), idx, last_avail, last_used) } {
            0 => Ok(()),
            r => Err(Error::dpdk("rte_vhost_set_vring_base", -r, "")),
        }
    }

    /// Interrupts the guest for vring `idx` without ever waiting on the
    /// queue lock a vhost-user message handler may hold: false if it was
    /// busy (try again next burst).
    #[inline]
    pub fn call_nonblock(&self, idx: u16) -> bool {
        // SAFETY: a live vid; the call only try-locks the vring.
        let r = unsafe { ffi::rte_vhost_vring_call_nonblock(self.vid(), idx) };
        r != -libc::EAGAIN
    }

    /// Asks the guest to kick (or not) on vring `idx`. Takes the queue lock:
    /// control thread only, never from a callback.
    pub fn enable_guest_notification(&self, idx: u16, on: bool) -> Result<()> {
        // SAFETY: a live vid.
        match unsafe { ffi::rte_vhost_enable_guest_notification(self.vid(), idx, on as i32) } {
            0 => Ok(()),
            r => Err(Error::dpdk("rte_vhost_enable_guest_notification", -r, "")),
        }
    }
}

/// Receives what the guest transmits, copying it into mbufs.
pub struct VhostRxQueue {
    lease: Arc<DeviceLease>,
    vring: u16,
}

/// Sends to the guest, copying mbufs into its receive buffers.
pub struct VhostTxQueue {
    lease: Arc<DeviceLease>,
    vring: u16,
}

impl VhostRxQueue {
    /// Dequeues into the free slots of `burst`, allocating from `pool`
    /// (chained mbufs for frames larger than the data room).
    #[inline]
    pub fn dequeue_burst<const N: usize>(&mut self, pool: &Mempool, burst: &mut Burst<N>) -> usize {
        let (slots, room) = burst.spare_raw();
        // rte_vhost's dequeue does not check for a zero count (and a pending
        // RARP would be written past the end): never ask it for nothing.
        if room == 0 {
            return 0;
        }
        // SAFETY: the lease keeps the vid alive; `slots` has `room` free
        // entries, n of which the library fills with mbufs it hands to us.
        unsafe {
            let n = ffi::rte_vhost_dequeue_burst(self.lease.vid, self.vring, pool.as_ptr(), slots, room as u16);
            burst.assume_filled(n as usize);
            n as usize
        }
    }
}

impl VhostTxQueue {
    /// Copies mbufs from the front of `burst` into the guest, frees the ones
    /// copied, and leaves the rest (guest ring full) in `burst`, owned by the
    /// caller. Returns how many were copied.
    #[inline]
    pub fn enqueue_burst<const N: usize>(&mut self, burst: &mut Burst<N>) -> usize {
        if burst.is_empty() {
            return 0;
        }
        let len = burst.len() as u16;
        // SAFETY: the lease keeps the vid alive; the library reads `len`
        // mbufs and leaves them to us.
        let n = unsafe { ffi::rte_vhost_enqueue_burst(self.lease.vid, self.vring, burst.as_raw(), len) } as usize;
        burst.free_front(n);
        n
    }
}
