//! A guest in plain memory for the ring tests: one region holding the
//! rings at 0x1000.. and buffers from 0x10000 on (rings of up to 256
//! entries fit there; `with_rings` places bigger ones elsewhere).
use pmd_bridge::guest_mem::{GuestMemory, Gpa};

use super::{RingFeatures, SplitQueue};

pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
pub const DATA: u64 = 0x10000;

pub struct TestGuest {
    pub mem: GuestMemory,
    pub size: u16,
    pub avail_idx: u16,
    /// What `queue` negotiates.
    pub features: RingFeatures,
    /// Where the descriptor table, avail ring and used ring are.
    pub rings: [u64; 3],
}

/// One descriptor as the guest writes it: (addr, len, flags, next).
pub type RawDesc = (u64, u32, u16, u16);

fn encode((addr, len, flags, next): RawDesc) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

impl TestGuest {
    pub fn new(size: u16) -> TestGuest {
        TestGuest::with_memory(GuestMemory::new_owned(&[(0x1000, 0x3f000)]), size)
    }

    /// A guest being migrated: its writes are logged (one bit per page).
    pub fn logged(size: u16) -> TestGuest {
        TestGuest::with_memory(GuestMemory::new_owned_logged(&[(0x1000, 0x3f000)], 8), size)
    }

    /// Rings at the usual addresses in `mem`.
    pub fn with_memory(mem: GuestMemory, size: u16) -> TestGuest {
        TestGuest::with_rings(mem, size, [DESC, AVAIL, USED])
    }

    /// Rings at `[desc, avail, used]` in `mem`.
    pub fn with_rings(mem: GuestMemory, size: u16, rings: [u64; 3]) -> TestGuest {
        TestGuest { mem, size, avail_idx: 0, features: RingFeatures::default(), rings }
    }

    pub fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.mem.write(Gpa(self.rings[0] + 16 * i as u64), &encode((addr, len, flags, next))).unwrap();
    }

    /// Writes an indirect table of `entries` at `at`.
    pub fn table(&self, at: u64, entries: &[RawDesc]) {
        for (i, &d) in entries.iter().enumerate() {
            self.mem.write(Gpa(at + 16 * i as u64), &encode(d)).unwrap();
        }
    }

    /// Makes chain `head` available.
    pub fn offer(&mut self, head: u16) {
        let avail = self.rings[1];
        let slot = (self.avail_idx % self.size) as u64;
        self.mem.write(Gpa(avail + 4 + 2 * slot), &head.to_le_bytes()).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.store_u16_release(Gpa(avail + 2), self.avail_idx).unwrap();
    }

    pub fn queue(&self) -> SplitQueue {
        self.queue_at((0, 0))
    }

    /// A queue resuming at `indices` (avail, used).
    pub fn queue_at(&self, indices: (u16, u16)) -> SplitQueue {
        let [desc, avail, used] = self.rings.map(Gpa);
        SplitQueue::with_features(self.size, desc, avail, used, indices, &self.mem, self.features).unwrap()
    }

    /// The guest's used_event (EVENT_IDX): interrupt once the used index
    /// passes `v`.
    pub fn set_used_event(&self, v: u16) {
        self.mem.store_u16_release(Gpa(self.rings[1] + 4 + 2 * self.size as u64), v).unwrap();
    }

    /// The avail_event slot after the used ring (EVENT_IDX).
    pub fn avail_event(&self) -> u16 {
        self.mem.read_u16(Gpa(self.rings[2] + 4 + 8 * self.size as u64)).unwrap()
    }

    /// Used entry `i`: (head, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let used = self.rings[2];
        let slot = (i % self.size) as u64;
        (self.mem.read_u32(Gpa(used + 4 + 8 * slot)).unwrap(), self.mem.read_u32(Gpa(used + 8 + 8 * slot)).unwrap())
    }
}
