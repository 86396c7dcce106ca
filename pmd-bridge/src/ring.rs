//! DPDK rings (`rte_ring`), here for ports built on them (`net_ring`).
use std::ptr::NonNull;

use crate::error::{cstring, rte_errno, Error, Result};
use crate::{ffi, log, Eal};

/// A multi-producer, multi-consumer ring of pointers.
pub struct Ring {
    raw: NonNull<ffi::rte_ring>,
    _eal: Eal,
}

// SAFETY: an MP/MC ring may be used from any thread.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// A ring holding exactly `slots` entries (`RING_F_EXACT_SZ`).
    #[cold]
    pub fn new(eal: &Eal, name: &str, slots: u32) -> Result<Ring> {
        let cname = cstring("ring name", name)?;
        // SAFETY: cname is a valid C string; DPDK copies it.
        let (raw, logged) = log::capture(|| unsafe {
            ffi::rte_ring_create(cname.as_ptr(), slots, ffi::SOCKET_ID_ANY, ffi::RING_F_EXACT_SZ)
        });
        let raw = NonNull::new(raw).ok_or_else(|| Error::dpdk("rte_ring_create", rte_errno(), &logged))?;
        Ok(Ring { raw, _eal: eal.clone() })
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_ring {
        self.raw.as_ptr()
    }

    /// Entries in the ring now.
    pub fn count(&self) -> u32 {
        // SAFETY: reads the producer and consumer indices of a live ring.
        unsafe { ffi::rte_ring_count(self.raw.as_ptr()) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the ring is ours; ports using it hold an Arc<Ring>, so none is alive.
        unsafe { ffi::rte_ring_free(self.raw.as_ptr()) }
    }
}
