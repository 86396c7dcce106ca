//! Guest memory as NICs read it: a mapping of the guest's memory files of
//! the switch's own, beside rte_vhost's.
//!
//! Frames lent to a NIC (`extbuf`) point into this mapping, and their
//! lender holds it until the NIC has freed them. rte_vhost's own mapping
//! (the one `GuestMemory` reads and writes rings through) is then never
//! held by a NIC: a memory-table change or a guest that goes waits only for
//! the PMD threads to let go of their rings, not for a NIC that may keep
//! buffers for as long as its link is down. Each region is mapped whole,
//! from file offset 0, as rte_vhost maps it; a mapping holds its file, so
//! it stays valid after rte_vhost closes the fd and after the guest exits.
//! Dropping the map unmaps it from every device first (`dma`), then from
//! the process.
use std::any::Any;
use std::sync::{Arc, Mutex};

use crate::dma::{page_range, DmaState};

/// One region as rte_vhost has it mapped (`rte_vhost_mem_region`).
pub struct MappedRegion {
    /// Where the region's bytes start in rte_vhost's mapping, and how many.
    pub host: usize,
    pub len: usize,
    /// rte_vhost's whole mapping of the file (from offset 0) and its size.
    pub mmap_addr: usize,
    pub mmap_size: usize,
    pub fd: i32,
}

/// What keeps the lent-from pages mapped.
enum Backing {
    /// Our own mappings (address, size), unmapped on drop.
    Own(Vec<(usize, usize)>),
    /// Memory of the process that the `GuestMemory` owns too (tests): lent
    /// where it is.
    Shared(#[allow(dead_code)] Arc<dyn Any + Send + Sync>),
}

pub struct LendMap {
    /// (start in the `GuestMemory`'s mapping, length, start in ours).
    regions: Vec<(usize, usize, usize)>,
    /// Devices this map is registered for; dropped before `backing`.
    pub(crate) dma: Mutex<DmaState>,
    backing: Backing,
}

impl LendMap {
    /// Maps each region's file again, read and write as rte_vhost maps it
    /// (an IOMMU mapping for a device pins pages writable), and shared, so
    /// the guest's writes show through. All or none.
    ///
    /// # Safety
    /// Each region must describe rte_vhost's live mapping of its open `fd`
    /// (from `rte_vhost_get_mem_table`, while the table cannot change).
    pub unsafe fn map(regions: &[MappedRegion]) -> std::io::Result<LendMap> {
        let mut own = Vec::with_capacity(regions.len());
        let mut table = Vec::with_capacity(regions.len());
        for r in regions {
            let offset = r.host.checked_sub(r.mmap_addr).filter(|o| o + r.len <= r.mmap_size);
            let Some(offset) = offset else {
                drop(LendMap { regions: Vec::new(), dma: Default::default(), backing: Backing::Own(own) });
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a region outside its mapping"));
            };
            // SAFETY: a new shared mapping of an open file at an address of
            // the kernel's choosing: no existing memory is touched.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), r.mmap_size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, r.fd, 0) };
            if p == libc::MAP_FAILED {
                let e = std::io::Error::last_os_error();
                drop(LendMap { regions: Vec::new(), dma: Default::default(), backing: Backing::Own(own) });
                return Err(e);
            }
            own.push((p as usize, r.mmap_size));
            table.push((r.host, r.len, p as usize + offset));
        }
        Ok(LendMap { regions: table, dma: Default::default(), backing: Backing::Own(own) })
    }

    /// Memory lent where it is, kept by `keep` (memory of our own: tests).
    pub(crate) fn shared(regions: impl Iterator<Item = (usize, usize)>, keep: Arc<dyn Any + Send + Sync>) -> LendMap {
        LendMap { regions: regions.map(|(host, len)| (host, len, host)).collect(), dma: Default::default(), backing: Backing::Shared(keep) }
    }

    /// Where `len` bytes at `host` (in the `GuestMemory`'s mapping) are in
    /// this one; None if they are not wholly in one region.
    #[inline]
    pub(crate) fn own(&self, host: usize, len: usize) -> Option<usize> {
        self.regions.iter().find(|&&(h, l, _)| host >= h && host - h + len <= l).map(|&(h, _, o)| o + (host - h))
    }

    /// The page-aligned ranges a device must be able to reach: none for
    /// memory of the process's own (tests), whose pages the heap shares.
    pub(crate) fn dma_ranges(&self) -> Vec<(usize, usize)> {
        match self.backing {
            Backing::Own(_) => self.regions.iter().map(|&(_, len, own)| page_range(own, len)).collect(),
            Backing::Shared(_) => Vec::new(),
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Backing::Own(maps) = self {
            for &(p, len) in maps.iter() {
                // SAFETY: our own mapping, made by `map`; nothing lent from
                // it is in flight (each lender holds the map) and no device
                // has it mapped (`dma` is dropped first).
                unsafe { libc::munmap(p as *mut libc::c_void, len) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_second_mapping_shows_the_same_bytes_and_outlives_the_fd() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        // SAFETY: a new shared mapping of our own file.
        let first = unsafe { libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0) } as usize;
        let region = MappedRegion { host: first + 4096, len: 4096, mmap_addr: first, mmap_size: 8192, fd: f.as_raw_fd() };
        // SAFETY: `first` is the live mapping of `f`.
        let map = unsafe { LendMap::map(&[region]) }.unwrap();
        drop(f);
        let ours = map.own(first + 4100, 10).unwrap();
        assert_ne!(ours, first + 4100);
        assert_eq!(map.own(first + 4090, 10), None, "before the region");
        assert_eq!(map.own(first + 8190, 10), None, "past its end");
        // SAFETY: both inside live mappings of the same file, which only this
        // thread touches.
        unsafe {
            (first as *mut u8).add(4100).write(42);
            libc::munmap(first as *mut libc::c_void, 8192);
            assert_eq!((ours as *const u8).read(), 42, "the guest's write shows, after its mapping went");
        }
        assert_eq!(map.dma_ranges(), [(ours - 4, 4096)]);
    }
}
