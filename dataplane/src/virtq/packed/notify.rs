//! When a packed ring's guest is interrupted, and when it kicks us: the
//! driver and device event suppression areas.
use pmd_bridge::guest_mem::{full_fence, GuestMemory};

use super::{PackedQueue, Pos, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE};
use crate::virtq::RingError;

impl PackedQueue {
    /// Whether to interrupt the guest for what has been published (call it
    /// after `publish`). The driver area's flags decide: DISABLE no,
    /// ENABLE yes; with EVENT_IDX, DESC asks for one once the used
    /// position passes its offset and wrap counter, checked against the
    /// position at the previous call (the first call says yes, as in
    /// split rings; so does the reserved value 3).
    pub fn needs_interrupt(&mut self, mem: &GuestMemory) -> bool {
        // Orders our used flags store before the driver area loads; without
        // it the guest could enable interrupts after our check and sleep
        // on a ring we just filled.
        full_fence();
        let new = self.next_used;
        let old = self.signalled.replace(new);
        let since = std::mem::take(&mut self.since);
        let Ok(flags) = mem.span_u16_acquire(&self.driver, 2) else { return true };
        if !self.features.event_idx || flags != RING_EVENT_FLAGS_DESC {
            return flags != RING_EVENT_FLAGS_DISABLE;
        }
        let (Some(old), Ok(off_wrap)) = (old, mem.span_u16_acquire(&self.driver, 0)) else { return true };
        // The event is passed if it lies in [old, new), the `since` slots
        // used meanwhile, counted round the cycle positions repeat over.
        since >= 2 * self.size as u32 || Pos::from_index(off_wrap).since(old, self.size) < since
    }

    /// Whether the driver area allows an interrupt at all (not DISABLE):
    /// the rule without EVENT_IDX (`needs_interrupt` applies it then).
    pub fn guest_wants_interrupt(&self, mem: &GuestMemory) -> bool {
        full_fence();
        mem.span_u16_acquire(&self.driver, 2).map(|f| f != RING_EVENT_FLAGS_DISABLE).unwrap_or(false)
    }

    /// Asks the guest never to kick us: we poll. With EVENT_IDX too, unlike
    /// the split ring's flag: DISABLE means none at all.
    pub fn suppress_kicks(&self, mem: &GuestMemory) -> Result<(), RingError> {
        mem.store(&self.device, 2, RING_EVENT_FLAGS_DISABLE.to_le_bytes())?;
        Ok(())
    }

    /// As the split ring's: ENABLE (a kick for every buffer, EVENT_IDX or
    /// not), then whether the next descriptor is still not available.
    pub fn ask_for_kicks(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
        mem.store(&self.device, 2, RING_EVENT_FLAGS_ENABLE.to_le_bytes())?;
        full_fence();
        Ok(self.available(mem)? == 0)
    }
}
