//! A guest in plain memory for the ring tests: one region holding the
//! rings at 0x1000.. and buffers from 0x10000 on.
use pmd_bridge::guest_mem::{GuestMemory, Gpa};

use super::SplitQueue;

pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
pub const DATA: u64 = 0x10000;

pub struct TestGuest {
    pub mem: GuestMemory,
    pub size: u16,
    pub avail_idx: u16,
}

impl TestGuest {
    pub fn new(size: u16) -> TestGuest {
        TestGuest { mem: GuestMemory::new_owned(&[(0x1000, 0x3f000)]), size, avail_idx: 0 }
    }

    /// A guest being migrated: its writes are logged (one bit per page).
    pub fn logged(size: u16) -> TestGuest {
        TestGuest { mem: GuestMemory::new_owned_logged(&[(0x1000, 0x3f000)], 8), size, avail_idx: 0 }
    }

    pub fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write(Gpa(DESC + 16 * i as u64), &d).unwrap();
    }

    /// Makes chain `head` available.
    pub fn offer(&mut self, head: u16) {
        let slot = (self.avail_idx % self.size) as u64;
        self.mem.write(Gpa(AVAIL + 4 + 2 * slot), &head.to_le_bytes()).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.store_u16_release(Gpa(AVAIL + 2), self.avail_idx).unwrap();
    }

    pub fn queue(&self) -> SplitQueue {
        SplitQueue::new(self.size, Gpa(DESC), Gpa(AVAIL), Gpa(USED), (0, 0), &self.mem).unwrap()
    }

    /// Used entry `i`: (head, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let slot = (i % self.size) as u64;
        (self.mem.read_u32(Gpa(USED + 4 + 8 * slot)).unwrap(), self.mem.read_u32(Gpa(USED + 8 + 8 * slot)).unwrap())
    }
}
