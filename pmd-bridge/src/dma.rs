//! DMA from guest memory: what a device needs before it may read a guest's
//! buffers lent to it (`extbuf`).
//!
//! Virtual devices (the vdev bus: net_ring, net_tap, net_af_packet, ...)
//! read mbufs through our own virtual addresses: nothing to map. A device
//! on a real bus (PCI) reads by IOVA through the IOMMU: the guest's regions
//! must be known to the EAL (`rte_extmem_register`) and mapped for the
//! device (`rte_dev_dma_map`, IOVA = VA, which needs the EAL in IOVA-as-VA
//! mode, i.e. vfio). Without that mapping the switch copies. net_virtio_user
//! hands buffer addresses to another process that only knows the EAL's own
//! memory: never lent to.
//!
//! What is registered and mapped is the switch's own mapping of the
//! guest's memory (`lend_map`), the one lent frames point into, and the
//! registration goes with it: its last holder (the `GuestMemory`, or a
//! lender while its chains are in flight) unmaps it from every device and
//! unregisters it before unmapping it.
use std::ffi::CStr;
use crate::error::{rte_errno, Error, Result};
use crate::guest_mem::GuestMemory;
use crate::lend_map::LendMap;
use crate::{ffi, EthPort};

/// How a device reaches the buffers of mbufs sent to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaKind {
    /// By our virtual addresses (a virtual device): any memory will do.
    ByVa,
    /// By IOVA: guest memory must be mapped for it first.
    Mapped,
    /// Through another process that knows only the EAL's memory.
    Never,
}

const PAGE: usize = 4096;

/// A lend map's DMA registration: its regions (page-aligned), whether the
/// EAL knows them, and the ports they are mapped for.
#[derive(Default)]
pub(crate) struct DmaState {
    ranges: Vec<(usize, usize)>,
    registered: bool,
    ports: Vec<u16>,
}

impl EthPort {
    /// How this port's device reaches buffers (see the module comment).
    pub fn dma_kind(&self) -> DmaKind {
        let Some(dev) = device(self.id()) else { return DmaKind::Never };
        let name = |p: *const std::os::raw::c_char| {
            if p.is_null() {
                return String::new();
            }
            // SAFETY: DPDK's names are NUL-terminated strings that live as
            // long as the device (or bus); copied at once.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        // SAFETY: a live device of a valid port; these accessors only read.
        let (bus, driver) = unsafe { (name(ffi::rte_bus_name(ffi::rte_dev_bus(dev))), name(ffi::rte_driver_name(ffi::rte_dev_driver(dev)))) };
        match (bus.as_str(), driver.as_str()) {
            (_, "net_virtio_user") => DmaKind::Never,
            ("vdev", _) => DmaKind::ByVa,
            _ => DmaKind::Mapped,
        }
    }
}

fn device(port: u16) -> Option<*mut ffi::rte_device> {
    let mut info = ffi::rte_eth_dev_info::default();
    // SAFETY: a validity check, then an info query on a valid port.
    let ok = unsafe { ffi::rte_eth_dev_is_valid_port(port) != 0 && ffi::rte_eth_dev_info_get(port, &mut info) == 0 };
    (ok && !info.device.is_null()).then_some(info.device)
}

impl GuestMemory {
    /// Maps this memory as NICs read it for `port`'s device (registering it
    /// with the EAL first, once). Ok for a device that reads by VA; an
    /// error says why a device has no mapping (its frames are then copied).
    pub fn dma_map(&self, port: &EthPort) -> Result<()> {
        let kind = port.dma_kind();
        if kind == DmaKind::Never {
            return Err(Error::InvalidArgument(format!("{}: its driver cannot read guest memory", port.name())));
        }
        let map = self.lend_map().ok_or_else(|| Error::InvalidArgument("guest memory the switch could not map for lending".into()))?;
        map.dma_map(port.id(), kind)
    }

    /// Unmaps this memory from port `port` (before the port closes).
    pub fn dma_unmap(&self, port: u16) {
        if let Some(map) = self.lend_map() {
            map.dma_unmap(port);
        }
    }
}

impl LendMap {
    fn dma_map(&self, port: u16, kind: DmaKind) -> Result<()> {
        let mut st = self.dma.lock().unwrap_or_else(|e| e.into_inner());
        let mapped = (|| {
            if !st.registered {
                st.ranges = self.dma_ranges();
                st.register()?;
            }
            if !st.ports.contains(&port) {
                st.map_device(port)?;
                st.ports.push(port);
            }
            Ok(())
        })();
        // A virtual device reads by VA: the mapping is a formality to it.
        if kind == DmaKind::ByVa {
            return Ok(());
        }
        mapped
    }

    fn dma_unmap(&self, port: u16) {
        let mut st = self.dma.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = st.ports.iter().position(|&p| p == port) {
            st.ports.swap_remove(i);
            st.unmap_device(port);
        }
    }
}

impl DmaState {
    /// `rte_extmem_register` for each range; all or none.
    fn register(&mut self) -> Result<()> {
        for (i, &(va, len)) in self.ranges.iter().enumerate() {
            // SAFETY: a page-aligned range of our mapping of guest memory,
            // mapped while its `LendMap` lives; the EAL only records it.
            if unsafe { ffi::rte_extmem_register(va as *mut _, len, std::ptr::null_mut(), 0, PAGE) } != 0 {
                let e = rte_errno();
                for &(va, len) in &self.ranges[..i] {
                    // SAFETY: registered just above.
                    unsafe { ffi::rte_extmem_unregister(va as *mut _, len) };
                }
                return Err(Error::dpdk("rte_extmem_register", e, ""));
            }
        }
        self.registered = true;
        Ok(())
    }

    fn map_device(&self, port: u16) -> Result<()> {
        // IOVA = VA: the address a device is given is our virtual address.
        // SAFETY: reads the EAL's configuration.
        if unsafe { ffi::rte_eal_iova_mode() } != ffi::rte_iova_mode_RTE_IOVA_VA {
            return Err(Error::InvalidArgument("the EAL is not in IOVA-as-VA mode (vfio)".into()));
        }
        let dev = device(port).ok_or_else(|| Error::InvalidArgument(format!("no port {port}")))?;
        for (i, &(va, len)) in self.ranges.iter().enumerate() {
            // SAFETY: a live device; a range registered with the EAL above.
            if unsafe { ffi::rte_dev_dma_map(dev, va as *mut _, va as u64, len) } != 0 {
                let e = rte_errno();
                for &(va, len) in &self.ranges[..i] {
                    // SAFETY: mapped just above.
                    unsafe { ffi::rte_dev_dma_unmap(dev, va as *mut _, va as u64, len) };
                }
                return Err(Error::dpdk("rte_dev_dma_map", e, ""));
            }
        }
        Ok(())
    }

    fn unmap_device(&self, port: u16) {
        // A port closed meanwhile took its mappings with it.
        let Some(dev) = device(port) else { return };
        for &(va, len) in &self.ranges {
            // SAFETY: a live device this range was mapped for.
            unsafe { ffi::rte_dev_dma_unmap(dev, va as *mut _, va as u64, len) };
        }
    }
}

impl Drop for DmaState {
    /// The lend map goes: off every device, then out of the EAL, before its
    /// mapping does.
    fn drop(&mut self) {
        for &port in &self.ports {
            self.unmap_device(port);
        }
        if self.registered {
            for &(va, len) in &self.ranges {
                // SAFETY: registered by `register`, still mapped (the map
                // that owns this state is being dropped, not yet unmapped).
                unsafe { ffi::rte_extmem_unregister(va as *mut _, len) };
            }
        }
    }
}

/// `[start, end)` rounded out to whole pages: a region's mapping is made
/// of pages, so the rounded range is mapped too.
pub(crate) fn page_range(host: usize, len: usize) -> (usize, usize) {
    let start = host & !(PAGE - 1);
    let end = (host + len).next_multiple_of(PAGE);
    (start, end - start)
}

#[cfg(test)]
mod tests {
    #[test]
    fn regions_round_out_to_pages() {
        assert_eq!(super::page_range(0x1000, 0x2000), (0x1000, 0x2000));
        assert_eq!(super::page_range(0x1010, 0x10), (0x1000, 0x1000));
        assert_eq!(super::page_range(0x1ff0, 0x20), (0x1000, 0x2000));
    }
}
