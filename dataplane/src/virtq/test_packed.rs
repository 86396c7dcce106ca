//! A packed-ring driver in plain memory for the tests: one region holding
//! the descriptor ring at 0x1000, the driver area at 0x2000, the device
//! area at 0x3000 and buffers from 0x10000 on (as `TestGuest`); rings of
//! up to 256 entries fit there.
use std::collections::HashMap;

use pmd_bridge::guest_mem::{GuestMemory, Gpa};

use super::test_guest::{AVAIL, DESC, USED};
use super::{PackedQueue, RingFeatures, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED};

/// A buffer as the driver offers it: (addr, len, flags); `offer` adds NEXT
/// and the availability flags.
pub type Buf = (u64, u32, u16);
/// A descriptor exactly as written: (addr, len, id, flags).
pub type Raw = (u64, u32, u16, u16);

pub struct PackedGuest {
    pub mem: GuestMemory,
    pub size: u16,
    /// What `queue` negotiates.
    pub features: RingFeatures,
    /// Where the descriptor ring, driver area and device area are.
    pub rings: [u64; 3],
    /// Where the driver makes its next descriptor available.
    pub next: u16,
    pub wrap: bool,
    /// Where it reads the next used descriptor.
    pub used_at: u16,
    pub used_wrap: bool,
    /// The slots each id's chain took, as the driver keeps them.
    pub slots: HashMap<u16, u16>,
}

/// The flags that make a descriptor available in the lap of counter `wrap`.
pub fn avail_flags(wrap: bool) -> u16 {
    if wrap {
        VRING_PACKED_DESC_F_AVAIL
    } else {
        VRING_PACKED_DESC_F_USED
    }
}

fn encode((addr, len, id, flags): Raw) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&id.to_le_bytes());
    d[14..16].copy_from_slice(&flags.to_le_bytes());
    d
}

impl PackedGuest {
    pub fn new(size: u16) -> PackedGuest {
        PackedGuest::with_memory(GuestMemory::new_owned(&[(0x1000, 0x3f000)]), size)
    }

    /// A guest being migrated: its writes are logged (one bit per page).
    pub fn logged(size: u16) -> PackedGuest {
        PackedGuest::with_memory(GuestMemory::new_owned_logged(&[(0x1000, 0x3f000)], 8), size)
    }

    pub fn with_memory(mem: GuestMemory, size: u16) -> PackedGuest {
        PackedGuest::with_rings(mem, size, [DESC, AVAIL, USED])
    }

    pub fn with_rings(mem: GuestMemory, size: u16, rings: [u64; 3]) -> PackedGuest {
        PackedGuest { mem, size, features: RingFeatures::default(), rings, next: 0, wrap: true, used_at: 0, used_wrap: true, slots: HashMap::new() }
    }

    /// Both sides at `slot` in the lap of counter `wrap` (a ring resumed):
    /// the slots behind it used in that lap, the rest in the one before
    /// (zeroed memory reads as used in a lap of counter 0).
    pub fn at(mut self, slot: u16, wrap: bool) -> PackedGuest {
        (self.next, self.wrap, self.used_at, self.used_wrap) = (slot, wrap, slot, wrap);
        for s in 0..self.size {
            if (s < slot) == wrap {
                self.raw(s, (0, 0, 0, VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED));
            }
        }
        self
    }

    /// Writes descriptor `slot` as given.
    pub fn raw(&self, slot: u16, d: Raw) {
        self.mem.write(Gpa(self.rings[0] + 16 * slot as u64), &encode(d)).unwrap();
    }

    /// The descriptor in `slot` as it is now.
    pub fn read(&self, slot: u16) -> Raw {
        let mut b = [0u8; 16];
        self.mem.read(Gpa(self.rings[0] + 16 * slot as u64), &mut b).unwrap();
        (u64::from_le_bytes(b[0..8].try_into().unwrap()), u32::from_le_bytes(b[8..12].try_into().unwrap()), u16::from_le_bytes([b[12], b[13]]), u16::from_le_bytes([b[14], b[15]]))
    }

    /// Makes a chain of `bufs` available under `id` as a driver does:
    /// every descriptor flagged available for its lap, NEXT on all but the
    /// last, the id in each, the head's flags written last (release).
    /// Returns the head's slot.
    pub fn offer(&mut self, id: u16, bufs: &[Buf]) -> u16 {
        let n = bufs.len();
        let descs: Vec<_> = bufs.iter().enumerate().map(|(k, &(a, l, f))| (a, l, id, f | if k + 1 < n { VRING_DESC_F_NEXT } else { 0 })).collect();
        self.offer_raw(&descs, true)
    }

    /// Writes `descs` from the next slot on, adding the availability flags
    /// of each one's lap if `flag` (else exactly as given), the head's
    /// flags last; the last one's id takes all their slots.
    pub fn offer_raw(&mut self, descs: &[Raw], flag: bool) -> u16 {
        let head = self.next;
        let mut head_flags = 0;
        for (k, &(a, l, id, f)) in descs.iter().enumerate() {
            let f = if flag { f | avail_flags(self.wrap) } else { f };
            if k == 0 {
                head_flags = f;
                self.raw(self.next, (a, l, id, 0));
            } else {
                self.raw(self.next, (a, l, id, f));
            }
            self.next += 1;
            if self.next == self.size {
                self.next = 0;
                self.wrap = !self.wrap;
            }
        }
        if let Some(&(_, _, id, _)) = descs.last() {
            self.slots.insert(id, descs.len() as u16);
        }
        self.mem.store_u16_release(Gpa(self.rings[0] + 16 * head as u64 + 14), head_flags).unwrap();
        head
    }

    /// Offers one INDIRECT descriptor (plus `flags`) for the table at `at`
    /// of `entries` entries.
    pub fn offer_indirect(&mut self, id: u16, at: u64, entries: u32, flags: u16) -> u16 {
        self.offer(id, &[(at, 16 * entries, VRING_DESC_F_INDIRECT | flags)])
    }

    /// Writes an indirect table at `at`.
    pub fn table(&self, at: u64, entries: &[Raw]) {
        for (i, &d) in entries.iter().enumerate() {
            self.mem.write(Gpa(at + 16 * i as u64), &encode(d)).unwrap();
        }
    }

    /// The next used descriptor, if the device has published one: (id,
    /// len, flags). The driver moves on by the slots it gave that id.
    pub fn used(&mut self) -> Option<(u16, u32, u16)> {
        let at = self.rings[0] + 16 * self.used_at as u64;
        let flags = self.mem.read_u16(Gpa(at + 14)).unwrap();
        let used = (flags & VRING_PACKED_DESC_F_USED != 0) == self.used_wrap && (flags & VRING_PACKED_DESC_F_AVAIL != 0) == self.used_wrap;
        if !used {
            return None;
        }
        let (_, len, id, _) = self.read(self.used_at);
        let n = *self.slots.get(&id).unwrap_or_else(|| panic!("used id {id} was never offered"));
        self.used_at += n;
        if self.used_at >= self.size {
            self.used_at -= self.size;
            self.used_wrap = !self.used_wrap;
        }
        Some((id, len, flags))
    }

    /// The driver area: interrupt `flags`, and with DESC the position
    /// (slot | wrap << 15) to interrupt at.
    pub fn set_event(&self, flags: u16, off_wrap: u16) {
        let d = self.rings[1];
        self.mem.write(Gpa(d), &off_wrap.to_le_bytes()).unwrap();
        self.mem.store_u16_release(Gpa(d + 2), flags).unwrap();
    }

    /// The device area's flags.
    pub fn device_flags(&self) -> u16 {
        self.mem.read_u16(Gpa(self.rings[2] + 2)).unwrap()
    }

    /// A queue resuming where the guest has had everything back (what it
    /// offered since is there to pop).
    pub fn queue(&self) -> PackedQueue {
        let pos = self.used_at | (self.used_wrap as u16) << 15;
        let [d, dr, dv] = self.rings.map(Gpa);
        PackedQueue::new(self.size, d, dr, dv, (pos, pos), &self.mem, self.features).unwrap()
    }
}
