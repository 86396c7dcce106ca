//! A guest's memory as the switch sees it: regions of guest physical
//! addresses mapped somewhere in our address space.
//!
//! The guest may write any byte of it at any time, so no Rust reference into
//! it ever exists: every access copies bytes in or out through raw pointers,
//! after a bounds check against the regions (the rules of rust-vmm's
//! volatile_memory.rs). A range that crosses regions is split; one that
//! leaves guest memory is an error, never an access. Translation is done
//! here, in Rust, from our own copy of the region table: no C call per buffer.
use std::sync::atomic::{fence, AtomicU16, Ordering};

/// A guest physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpa(pub u64);

/// A range that does not lie inside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds {
    pub gpa: Gpa,
    pub len: u64,
}

#[derive(Clone, Copy, Debug)]
struct Region {
    gpa: u64,
    len: u64,
    host: *mut u8,
}

/// What keeps a mapping alive: our own buffers (tests, plain memory), or a
/// token from whoever owns the mapping (a vhost device lease: rte_vhost
/// unmaps a device's memory only after destroy_device, which waits for it).
enum Backing {
    Owned(#[allow(dead_code)] Vec<Box<[u8]>>),
    Borrowed(#[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>),
}

pub struct GuestMemory {
    regions: Vec<Region>,
    _backing: Backing,
}

// SAFETY: the regions are plain memory; all access goes through raw copies
// that tolerate concurrent writers, so sharing across threads is as sound
// as sharing it with the guest.
unsafe impl Send for GuestMemory {}
// SAFETY: as above.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Zeroed memory of our own at the given guest addresses: a guest's
    /// memory for tests and fuzzing, with the same access paths.
    pub fn new_owned(layout: &[(u64, usize)]) -> GuestMemory {
        let mut bufs: Vec<Box<[u8]>> = layout.iter().map(|&(_, len)| vec![0u8; len].into_boxed_slice()).collect();
        let regions = layout
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&(gpa, len), b)| Region { gpa, len: len as u64, host: b.as_mut_ptr() })
            .collect();
        GuestMemory { regions, _backing: Backing::Owned(bufs) }
    }

    /// Memory mapped by someone else (rte_vhost's copy of the guest's table),
    /// kept mapped while `keepalive` lives.
    ///
    /// # Safety
    /// Each `(gpa, len, host)` must describe `len` bytes mapped at `host`,
    /// readable and writable, for as long as `keepalive` is alive.
    pub unsafe fn from_mapped(regions: &[(u64, u64, *mut u8)], keepalive: Box<dyn std::any::Any + Send + Sync>) -> GuestMemory {
        let regions = regions.iter().map(|&(gpa, len, host)| Region { gpa, len, host }).collect();
        GuestMemory { regions, _backing: Backing::Borrowed(keepalive) }
    }

    /// The guest address of a host address inside guest memory (rte_vhost
    /// hands out ring addresses already translated to host addresses).
    pub fn gpa_of(&self, host: u64) -> Option<Gpa> {
        self.regions
            .iter()
            .find(|r| host >= r.host as u64 && host - (r.host as u64) < r.len)
            .map(|r| Gpa(r.gpa + (host - r.host as u64)))
    }

    /// The contiguous host span holding `gpa`: (pointer, bytes to the end of
    /// its region).
    #[inline]
    fn locate(&self, gpa: u64) -> Option<(*mut u8, u64)> {
        self.regions.iter().find(|r| gpa >= r.gpa && gpa - r.gpa < r.len).map(|r| {
            let off = gpa - r.gpa;
            // SAFETY: off < r.len, so the result stays inside the region.
            (unsafe { r.host.add(off as usize) }, r.len - off)
        })
    }

    /// Whether `[gpa, gpa+len)` lies wholly in guest memory (across regions).
    pub fn contains(&self, gpa: Gpa, len: u64) -> bool {
        self.chunks(gpa, len, |_, _| ()).is_ok()
    }

    /// Calls `f(host pointer, offset into the range)` for each contiguous
    /// piece of `[gpa, gpa+len)` with the piece's length; fails (touching
    /// nothing) if any part lies outside guest memory.
    fn chunks(&self, gpa: Gpa, len: u64, mut f: impl FnMut(*mut u8, (usize, usize))) -> Result<(), OutOfBounds> {
        let err = OutOfBounds { gpa, len };
        gpa.0.checked_add(len).ok_or(err)?;
        // Check the whole range first, so a failure has no side effect.
        let mut at = gpa.0;
        let end = gpa.0 + len;
        while at < end {
            let (_, room) = self.locate(at).ok_or(err)?;
            at += room.min(end - at);
        }
        let mut at = gpa.0;
        while at < end {
            let (p, room) = self.locate(at).ok_or(err)?;
            let n = room.min(end - at);
            f(p, ((at - gpa.0) as usize, n as usize));
            at += n;
        }
        Ok(())
    }

    /// Copies guest bytes at `gpa` into `buf`.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.chunks(gpa, buf.len() as u64, |p, (off, n)| {
            // SAFETY: `p` has n bytes inside a live region (checked by
            // chunks); buf[off..off+n] is ours. The guest may write the
            // source concurrently: we copy bytes, never form a reference.
            unsafe { std::ptr::copy_nonoverlapping(p, buf[off..off + n].as_mut_ptr(), n) }
        })
    }

    /// Copies `data` into guest memory at `gpa`.
    pub fn write(&self, gpa: Gpa, data: &[u8]) -> Result<(), OutOfBounds> {
        self.chunks(gpa, data.len() as u64, |p, (off, n)| {
            // SAFETY: as in read, with the destination in guest memory.
            unsafe { std::ptr::copy_nonoverlapping(data[off..off + n].as_ptr(), p, n) }
        })
    }

    pub fn read_u16(&self, gpa: Gpa) -> Result<u16, OutOfBounds> {
        let mut b = [0u8; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn read_u32(&self, gpa: Gpa) -> Result<u32, OutOfBounds> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn read_u64(&self, gpa: Gpa) -> Result<u64, OutOfBounds> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A ring index the other side publishes (`avail->idx`): an atomic load
    /// with acquire ordering, so the entries it covers are seen after it.
    /// The address must be 2-byte aligned and in one region.
    pub fn load_u16_acquire(&self, gpa: Gpa) -> Result<u16, OutOfBounds> {
        let p = self.aligned_u16(gpa)?;
        // SAFETY: an aligned u16 inside a live region; the guest accesses it
        // atomically too (virtio ring indices are naturally aligned).
        Ok(u16::from_le(unsafe { AtomicU16::from_ptr(p) }.load(Ordering::Acquire)))
    }

    /// Publishes a ring index (`used->idx`) with release ordering, so the
    /// entries it covers are visible before it.
    pub fn store_u16_release(&self, gpa: Gpa, v: u16) -> Result<(), OutOfBounds> {
        let p = self.aligned_u16(gpa)?;
        // SAFETY: as in load_u16_acquire.
        unsafe { AtomicU16::from_ptr(p) }.store(v.to_le(), Ordering::Release);
        Ok(())
    }

    fn aligned_u16(&self, gpa: Gpa) -> Result<*mut u16, OutOfBounds> {
        let err = OutOfBounds { gpa, len: 2 };
        match self.locate(gpa.0) {
            Some((p, room)) if room >= 2 && (p as usize).is_multiple_of(2) => Ok(p.cast()),
            _ => Err(err),
        }
    }

    /// Copies `len` bytes from `src` in `from` straight to `dst` in `to`:
    /// the one copy VM to VM. Checks both ranges before copying anything.
    pub fn copy(from: &GuestMemory, src: Gpa, to: &GuestMemory, dst: Gpa, len: u64) -> Result<(), OutOfBounds> {
        if !from.contains(src, len) {
            return Err(OutOfBounds { gpa: src, len });
        }
        if !to.contains(dst, len) {
            return Err(OutOfBounds { gpa: dst, len });
        }
        let mut done = 0u64;
        while done < len {
            let (s, sroom) = from.locate(src.0 + done).expect("checked");
            let (d, droom) = to.locate(dst.0 + done).expect("checked");
            let n = sroom.min(droom).min(len - done);
            // SAFETY: both spans are inside live regions (checked above); the
            // guests may write them concurrently: a byte copy, no references.
            // Overlap is possible only within one guest's memory, hence copy.
            unsafe { std::ptr::copy(s, d, n as usize) };
            done += n;
        }
        Ok(())
    }
}

/// A full fence: orders our used-ring stores before reading whether the
/// guest wants a notification (the race the virtio spec's 2.7.7.2 describes).
#[inline]
pub fn full_fence() {
    fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemory {
        // Two regions with a hole between them, as guests have.
        GuestMemory::new_owned(&[(0x1000, 0x1000), (0x2000, 0x1000), (0x10000, 0x100)])
    }

    #[test]
    fn reads_and_writes_split_across_adjacent_regions() {
        let m = mem();
        let data: Vec<u8> = (0..64).collect();
        m.write(Gpa(0x1fe0), &data).unwrap();
        let mut back = vec![0u8; 64];
        m.read(Gpa(0x1fe0), &mut back).unwrap();
        assert_eq!(back, data);
        assert!(m.contains(Gpa(0x1000), 0x2000));
    }

    #[test]
    fn nothing_outside_guest_memory_is_touched() {
        let m = mem();
        assert!(m.write(Gpa(0x2ff0), &[1; 32]).is_err(), "runs into the hole");
        let mut b = [7u8; 16];
        m.read(Gpa(0x2ff0), &mut b).unwrap();
        assert_eq!(b, [0; 16], "a failed write writes nothing");
        assert!(m.read(Gpa(0x500), &mut b).is_err());
        assert!(m.read(Gpa(u64::MAX - 4), &mut b).is_err(), "no overflow");
        assert!(!m.contains(Gpa(0x10000), 0x101));
        assert!(m.load_u16_acquire(Gpa(0x1001)).is_err(), "misaligned index");
    }

    #[test]
    fn copy_between_guests_and_ring_indices() {
        let (a, b) = (mem(), mem());
        a.write(Gpa(0x1ff8), b"abcdefghijklmnop").unwrap();
        GuestMemory::copy(&a, Gpa(0x1ff8), &b, Gpa(0x10010), 16).unwrap();
        let mut out = [0u8; 16];
        b.read(Gpa(0x10010), &mut out).unwrap();
        assert_eq!(&out, b"abcdefghijklmnop");
        assert!(GuestMemory::copy(&a, Gpa(0x1ff8), &b, Gpa(0x100f8), 16).is_err());
        b.store_u16_release(Gpa(0x2002), 513).unwrap();
        assert_eq!(b.load_u16_acquire(Gpa(0x2002)).unwrap(), 513);
        assert_eq!(b.read_u16(Gpa(0x2002)).unwrap(), 513);
    }
}
