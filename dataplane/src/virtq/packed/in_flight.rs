//! Which buffer ids a packed ring has in flight, and the slots each took.
//!
//! Packed rings name a chain by the id the guest wrote, not by where it
//! lies, so an id offered again while in flight would make two chains
//! share one count of slots: `pop` refuses it. An in-order return gives
//! back every chain at once, and moves to a new epoch rather than clearing
//! each id (poll_ab, 2vm packed 64 B: 0.992, 0.993, 0.994).

/// Ring slots the chain in flight under each id took.
#[derive(Clone, Debug)]
pub(super) struct InFlight {
    /// By id: the epoch the entry was written in (bits 16..32) and the
    /// slots (bits 0..16; 0: nothing in flight).
    table: Box<[u32]>,
    /// The current epoch, in bits 16..32.
    epoch: u32,
}

const EPOCH: u32 = 1 << 16;

impl InFlight {
    pub(super) fn new(size: u16) -> InFlight {
        InFlight { table: vec![0; size as usize].into_boxed_slice(), epoch: 0 }
    }

    /// Whether a chain can be taken under `id`: one below the ring's size
    /// with nothing in flight.
    #[inline(always)]
    pub(super) fn is_free(&self, id: u16) -> bool {
        // In flight: written this epoch with slots, [epoch + 1, epoch + 0xffff].
        self.table.get(id as usize).is_some_and(|&e| e.wrapping_sub(self.epoch + 1) >= EPOCH - 1)
    }

    /// Records a chain of `slots` slots (more than 0) in flight under `id`
    /// (below the size, free).
    #[inline(always)]
    pub(super) fn set(&mut self, id: u16, slots: u16) {
        if let Some(e) = self.table.get_mut(id as usize) {
            *e = self.epoch | slots as u32;
        }
    }

    /// The slots of the chain in flight under `id` (0: none), which is no
    /// longer.
    #[inline(always)]
    pub(super) fn take(&mut self, id: u16) -> u16 {
        let epoch = self.epoch;
        match self.table.get_mut(id as usize) {
            Some(e) if *e & !(EPOCH - 1) == epoch => std::mem::replace(e, 0) as u16,
            _ => 0,
        }
    }

    /// Every chain in flight is returned (an in-order ring's: none is
    /// lent out of order, see `GuestBurst::lend`).
    pub(super) fn take_all(&mut self) {
        self.epoch = self.epoch.wrapping_add(EPOCH);
        // Entries of the epoch 2^16 returns ago would look current again.
        if self.epoch == 0 {
            self.table.fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_in_flight_from_set_until_take_and_holds_its_slots() {
        let mut f = InFlight::new(4);
        assert!(f.is_free(3));
        assert!(!f.is_free(4), "beyond the ring");
        f.set(3, 2);
        assert!(!f.is_free(3));
        assert_eq!(f.take(3), 2);
        assert!(f.is_free(3));
        assert_eq!(f.take(3), 0, "taken once");
        assert_eq!(f.take(9), 0);
    }

    #[test]
    fn take_all_frees_every_id_and_later_ones_count_afresh() {
        let mut f = InFlight::new(4);
        f.set(0, 1);
        f.set(1, 3);
        f.take_all();
        assert!(f.is_free(0) && f.is_free(1));
        assert_eq!(f.take(1), 0, "returned with the epoch");
        f.set(1, 5);
        assert!(!f.is_free(1));
        assert_eq!(f.take(1), 5);
    }

    /// 2^16 epochs on, an entry left from the first would carry the
    /// current epoch: the wrap clears the table.
    #[test]
    fn an_entry_left_2_pow_16_epochs_ago_is_not_in_flight() {
        let mut f = InFlight::new(4);
        f.set(2, 1);
        for _ in 0..EPOCH {
            f.take_all();
        }
        assert_eq!(f.epoch, 0);
        assert!(f.is_free(2));
        assert_eq!(f.take(2), 0);
        f.set(2, 0xffff);
        assert!(!f.is_free(2), "the most slots an entry holds");
        assert_eq!(f.take(2), 0xffff);
    }
}
