//! Who gets a flooded frame: per VLAN, the ports that carry it and can
//! send, computed once per plan so a flood costs a load and a bit scan,
//! not a walk over every port.
use crate::counters::MAX_PORTS;
use crate::fwd::PortView;
use crate::vlan::VlanMode;

/// A set of port slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSet(u64);

const _: () = assert!(MAX_PORTS <= 64);

impl PortSet {
    pub const EMPTY: PortSet = PortSet(0);

    #[inline]
    pub fn insert(&mut self, slot: u16) {
        self.0 |= 1 << slot;
    }

    #[inline]
    pub fn without(self, slot: u16) -> PortSet {
        PortSet(self.0 & !(1 << slot))
    }

    #[inline]
    pub fn contains(self, slot: u16) -> bool {
        self.0 & (1 << slot) != 0
    }

    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Slots in order, lowest first.
impl Iterator for PortSet {
    type Item = u16;

    #[inline]
    fn next(&mut self) -> Option<u16> {
        (self.0 != 0).then(|| {
            let s = self.0.trailing_zeros() as u16;
            self.0 &= self.0 - 1;
            s
        })
    }
}

/// The flood set of every VLAN.
pub struct FloodSets(Box<[PortSet; 4096]>);

impl FloodSets {
    /// Every port of `ports` for which `can_send` holds, under each VLAN
    /// it carries.
    pub fn new(ports: &[Option<PortView>], can_send: impl Fn(u16) -> bool) -> FloodSets {
        let mut sets = Box::new([PortSet::EMPTY; 4096]);
        for p in ports.iter().flatten().filter(|p| can_send(p.slot)) {
            match &p.vlan {
                VlanMode::Access(v) => sets[*v as usize & 0xfff].insert(p.slot),
                VlanMode::Trunk(set) => set.iter().for_each(|v| sets[v as usize & 0xfff].insert(p.slot)),
            }
        }
        FloodSets(sets)
    }

    /// The ports a frame of `vlan` from `input` floods to.
    #[inline]
    pub fn targets(&self, vlan: u16, input: u16) -> PortSet {
        self.0[vlan as usize & 0xfff].without(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vlan::VlanSet;

    #[test]
    fn a_flood_reaches_every_other_sending_port_of_its_vlan() {
        let ports = vec![
            Some(PortView::new("a", 0, 1, VlanMode::Access(10), 1500)),
            Some(PortView::new("b", 1, 1, VlanMode::Trunk(Box::new(VlanSet::new(&[10, 20]))), 1500)),
            None,
            Some(PortView::new("c", 3, 1, VlanMode::Access(20), 1500)),
            Some(PortView::new("no guest", 4, 1, VlanMode::Access(10), 1500)),
            Some(PortView::new("d", 63, 1, VlanMode::Access(10), 1500)),
        ];
        let f = FloodSets::new(&ports, |s| s != 4);
        assert_eq!(f.targets(10, 0).collect::<Vec<_>>(), [1, 63]);
        assert_eq!(f.targets(20, 3).collect::<Vec<_>>(), [1]);
        assert_eq!(f.targets(20, 0).collect::<Vec<_>>(), [1, 3], "the input need not carry it");
        assert!(f.targets(30, 0).is_empty());
    }
}
