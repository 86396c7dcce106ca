//! A guest played by the test itself: rust-vmm's vhost-user frontend on one
//! of the switch's sockets, over memory of its own (tmpfs files, as QEMU
//! shares memfds), its rings written by hand. For what no driver does:
//! descriptors no driver would write, resets in a loop, rings kept full at
//! no cost to the test.
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{fence, Ordering};

use testbed::wait_until;
use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::DEADLINE;

// Feature bits (VIRTIO 1.1 5.1.3, 6; vhost-user).
pub const MRG_RXBUF: u64 = 1 << 15;
pub const LOG_ALL: u64 = 1 << 26;
pub const INDIRECT_DESC: u64 = 1 << 28;
pub const EVENT_IDX: u64 = 1 << 29;
pub const PROTOCOL_FEATURES: u64 = 1 << 30;
pub const VERSION_1: u64 = 1 << 32;

// Descriptor flags.
pub const NEXT: u16 = 1;
pub const WRITE: u16 = 2;
pub const INDIRECT: u16 = 4;
/// A descriptor: addr, len, flags, next.
pub type Desc = (u64, u32, u16, u16);

/// The virtio-net header with VERSION_1.
pub const HDR: usize = 12;
/// The guest's receive and transmit queues.
pub const RX: usize = 0;
pub const TX: usize = 1;

/// How the guest sets its device up.
pub struct Setup {
    /// Entries per ring (at most 1024: see `rings`).
    pub size: u16,
    /// Features to negotiate; the switch must offer them all.
    pub features: u64,
    pub protocol: VhostUserProtocolFeatures,
}

impl Default for Setup {
    fn default() -> Self {
        Setup { size: 256, features: VERSION_1 | PROTOCOL_FEATURES, protocol: VhostUserProtocolFeatures::REPLY_ACK }
    }
}

/// Guest memory shared with the switch: a tmpfs file per region (guest
/// address, bytes).
pub fn shared_memory(regions: &[(u64, usize)]) -> GuestMemoryMmap {
    let ranges = regions.iter().map(|&(gpa, len)| {
        let f = tempfile::tempfile_in("/dev/shm").unwrap();
        f.set_len(len as u64).unwrap();
        (GuestAddress(gpa), len, Some(FileOffset::new(f, 0)))
    });
    GuestMemoryMmap::<()>::from_ranges_with_files(ranges).unwrap()
}

/// Where queue `q`'s rings of `size` entries lie: (desc, avail, used), in
/// the guest's first 128 KB. Buffers go from `HEAP` up.
pub fn rings(q: usize, size: u16) -> (u64, u64, u64) {
    assert!(size <= 1024, "rings of {size} entries do not fit the layout");
    let desc = 0x10000 * q as u64;
    let avail = desc + (16 * size as u64).max(0x1000);
    (desc, avail, avail + 0x1000)
}

pub const HEAP: u64 = 0x10_0000;

/// Negotiates `setup`, announces `mem`'s first region, sets up and enables
/// both rings, the last enable acknowledged: the switch has seen the
/// device up when this returns. The kick and call eventfds, per queue.
pub fn bring_up(fe: &mut Frontend, mem: &GuestMemoryMmap, setup: &Setup) -> vhost::Result<Vec<EventFd>> {
    let region = mem.iter().next().unwrap();
    let host = region.as_ptr() as u64;
    fe.set_owner()?;
    let offered = fe.get_features()?;
    assert_eq!(offered & setup.features, setup.features, "the switch offers {:#x}: {offered:#x}", setup.features);
    fe.set_features(setup.features)?;
    fe.get_protocol_features()?;
    fe.set_protocol_features(setup.protocol)?;
    fe.set_mem_table(&[VhostUserMemoryRegionInfo::from_guest_region(region)?])?;
    let mut fds = Vec::new();
    for q in 0..2 {
        let (desc, avail, used) = rings(q, setup.size);
        fe.set_vring_num(q, setup.size)?;
        let cfg = VringConfigData {
            queue_max_size: setup.size,
            queue_size: setup.size,
            flags: 0,
            desc_table_addr: host + desc,
            used_ring_addr: host + used,
            avail_ring_addr: host + avail,
            log_addr: None,
        };
        fe.set_vring_addr(q, &cfg)?;
        fe.set_vring_base(q, 0)?;
        let (kick, call) = (EventFd::new(libc::EFD_NONBLOCK).unwrap(), EventFd::new(libc::EFD_NONBLOCK).unwrap());
        fe.set_vring_kick(q, &kick)?;
        fe.set_vring_call(q, &call)?;
        fds.extend([kick, call]);
    }
    fe.set_vring_enable(RX, true)?;
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    let last = fe.set_vring_enable(TX, true);
    fe.set_hdr_flags(VhostUserHeaderFlag::empty());
    last.map(|()| fds)
}

/// A connected guest. The switch polls its rings: it never kicks.
pub struct Guest {
    pub fe: Frontend,
    pub mem: GuestMemoryMmap,
    pub size: u16,
    /// Per queue: the avail index published so far.
    pub avail: [u16; 2],
    /// The socket again, for requests the frontend cannot make.
    pub raw: UnixStream,
    /// Per queue: kick, call.
    fds: Vec<EventFd>,
    /// Where `put` places the next bytes.
    free: u64,
}

impl Guest {
    pub fn connect(sock: &Path, mem: GuestMemoryMmap, setup: Setup) -> Guest {
        let stream = wait_until(DEADLINE, "the switch's socket", || UnixStream::connect(sock).ok()).unwrap();
        let raw = stream.try_clone().unwrap();
        let mut fe = Frontend::from_stream(stream, 2);
        let fds = bring_up(&mut fe, &mem, &setup).unwrap();
        Guest { fe, mem, size: setup.size, avail: [0; 2], raw, fds, free: HEAP }
    }

    pub fn rings(&self, q: usize) -> (u64, u64, u64) {
        rings(q, self.size)
    }

    /// Writes descriptor `i` of queue `q`'s table.
    pub fn desc(&self, q: usize, i: u16, d: Desc) {
        self.mem.write_slice(&descs(&[d]), GuestAddress(self.rings(q).0 + 16 * i as u64)).unwrap();
    }

    /// Makes the chain at `head` available on queue `q`.
    pub fn offer(&mut self, q: usize, head: u16) {
        let slot = (self.avail[q] % self.size) as u64;
        self.mem.write_obj(head.to_le(), GuestAddress(self.rings(q).1 + 4 + 2 * slot)).unwrap();
        self.publish_avail(q, self.avail[q].wrapping_add(1));
    }

    /// Sets queue `q`'s avail index, after every entry written before.
    pub fn publish_avail(&mut self, q: usize, idx: u16) {
        self.avail[q] = idx;
        fence(Ordering::SeqCst);
        self.mem.write_obj(idx.to_le(), GuestAddress(self.rings(q).1 + 2)).unwrap();
    }

    /// Puts `head(slot)` in every slot of queue `q`'s avail ring, for
    /// `keep_full`.
    pub fn fill_avail(&self, q: usize, head: impl Fn(u16) -> u16) {
        for slot in 0..self.size {
            self.mem.write_obj(head(slot).to_le(), GuestAddress(self.rings(q).1 + 4 + 2 * slot as u64)).unwrap();
        }
    }

    /// Offers again every chain the switch returned on queue `q`, so the
    /// whole ring is always on offer (slot `s` keeps the head `fill_avail`
    /// gave it; chains come back in the order taken).
    pub fn keep_full(&mut self, q: usize) {
        let full = self.used_idx(q).wrapping_add(self.size);
        if self.avail[q] != full {
            self.publish_avail(q, full);
        }
    }

    /// Copies `bytes` into free guest memory; returns their address.
    pub fn put(&mut self, bytes: &[u8]) -> u64 {
        let at = self.free;
        self.free = (at + bytes.len() as u64 + 63) & !63;
        self.mem.write_slice(bytes, GuestAddress(at)).unwrap();
        at
    }

    /// EVENT_IDX: interrupt me once queue `q`'s used index passes `idx`.
    pub fn used_event(&self, q: usize, idx: u16) {
        self.mem.write_obj(idx.to_le(), GuestAddress(self.rings(q).1 + 4 + 2 * self.size as u64)).unwrap();
    }

    /// Whether the switch interrupted queue `q` since the last look.
    pub fn interrupted(&self, q: usize) -> bool {
        self.call(q).read().is_ok()
    }

    /// Queue `q`'s interrupt eventfd (non-blocking).
    pub fn call(&self, q: usize) -> &EventFd {
        &self.fds[2 * q + 1]
    }

    pub fn used_idx(&self, q: usize) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(self.rings(q).2 + 2)).unwrap())
    }

    /// Used entry `i` of queue `q`: (id, len).
    pub fn used(&self, q: usize, i: u16) -> (u32, u32) {
        let at = self.rings(q).2 + 4 + 8 * (i % self.size) as u64;
        (u32::from_le(self.mem.read_obj(GuestAddress(at)).unwrap()), u32::from_le(self.mem.read_obj(GuestAddress(at + 4)).unwrap()))
    }

    /// Waits until queue `q`'s used index is `n`.
    pub fn wait_used(&self, q: usize, n: u16) {
        wait_until(DEADLINE, "used entries", || (self.used_idx(q) == n).then_some(()))
            .unwrap_or_else(|e| panic!("{e}: queue {q} used idx {}", self.used_idx(q)));
    }
}

/// Descriptors as the guest lays them out.
pub fn descs(entries: &[Desc]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|&(addr, len, flags, next)| [&addr.to_le_bytes()[..], &len.to_le_bytes(), &flags.to_le_bytes(), &next.to_le_bytes()].concat())
        .collect()
}
