//! The switch's ports by slot (a port's index in the PMD threads' tables
//! and counters): the port, if any, and what outlives it in its slot.
use std::ops::{Index, IndexMut};
use std::sync::Arc;

use dataplane::counters::{PortTotals, MAX_PORTS};
use dataplane::police::Policer;

use super::events::Flaps;
use crate::ports::PortState;

#[derive(Default)]
pub(super) struct Slot {
    pub port: Option<PortState>,
    /// Bumped for each port the slot takes, so that MAC entries and rx
    /// queue placements of an earlier one never apply to it.
    pub gen: u16,
    /// The counters when the port came, or at the last `stats clear`: what
    /// `show ports` subtracts.
    pub base: PortTotals,
    /// How often its guest reconnects, and its back-off.
    pub flaps: Flaps,
    /// The port's ingress policing bucket, kept from plan to plan.
    pub policer: Option<Arc<Policer>>,
}

pub(super) struct Slots(Vec<Slot>);

impl Slots {
    pub fn new() -> Slots {
        Slots((0..MAX_PORTS).map(|_| Slot::default()).collect())
    }

    pub fn ports(&self) -> impl Iterator<Item = &PortState> {
        self.0.iter().filter_map(|s| s.port.as_ref())
    }

    pub fn ports_mut(&mut self) -> impl Iterator<Item = &mut PortState> {
        self.0.iter_mut().filter_map(|s| s.port.as_mut())
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.0.iter_mut()
    }

    /// The port in `slot`, if any (and if `slot` is one).
    pub fn port(&self, slot: u16) -> Option<&PortState> {
        self.0.get(slot as usize)?.port.as_ref()
    }

    pub fn by_name(&self, name: &str) -> Option<u16> {
        self.ports().find(|p| p.cfg.name == name).map(|p| p.slot)
    }

    pub fn free(&self) -> Option<u16> {
        self.0.iter().position(|s| s.port.is_none()).map(|i| i as u16)
    }

    /// Every port, taken out of its slot (the switch stops).
    pub fn take_all(&mut self) -> impl Iterator<Item = PortState> + '_ {
        self.0.iter_mut().filter_map(|s| s.port.take())
    }
}

impl Index<u16> for Slots {
    type Output = Slot;

    fn index(&self, slot: u16) -> &Slot {
        &self.0[slot as usize]
    }
}

impl IndexMut<u16> for Slots {
    fn index_mut(&mut self, slot: u16) -> &mut Slot {
        &mut self.0[slot as usize]
    }
}
