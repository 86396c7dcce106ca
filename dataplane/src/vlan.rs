//! VLAN rules: which VLAN a frame belongs to on input, whether a port takes
//! it on output, and what tag edit that output needs.
//!
//! An access port carries one VLAN untagged: a tagged frame (priority tags
//! included) arriving on it is filtered. A trunk carries a set of VLANs
//! tagged: an untagged frame, or a tag outside the set, is filtered.
use crate::counters::DropReason;

/// A set of VLAN ids (1..=4094) as a bitmap: membership is one load.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    pub fn new(vids: &[u16]) -> VlanSet {
        let mut s = VlanSet([0; 64]);
        for &v in vids {
            s.0[(v as usize >> 6) & 63] |= 1 << (v & 63);
        }
        s
    }

    #[inline]
    pub fn contains(&self, vid: u16) -> bool {
        self.0[(vid as usize >> 6) & 63] & (1 << (vid & 63)) != 0
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..4096u16).filter(|&v| self.contains(v))
    }
}

impl std::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VlanMode {
    Access(u16),
    /// Boxed: the 512-byte bitmap would make every Access value as large.
    Trunk(Box<VlanSet>),
}

/// The tag change one output needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagEdit {
    Keep,
    Push(u16),
    Pop,
}

impl VlanMode {
    /// The VLAN of a frame with tag `tag` arriving on a port of this mode.
    #[inline]
    pub fn ingress(&self, tag: Option<u16>) -> Result<u16, DropReason> {
        match (self, tag) {
            (VlanMode::Access(v), None) => Ok(*v),
            (VlanMode::Trunk(set), Some(t)) if t != 0 && set.contains(t) => Ok(t),
            _ => Err(DropReason::VlanFiltered),
        }
    }

    /// Whether a port of this mode carries `vlan`.
    #[inline]
    pub fn carries(&self, vlan: u16) -> bool {
        match self {
            VlanMode::Access(v) => *v == vlan,
            VlanMode::Trunk(set) => set.contains(vlan),
        }
    }

    pub fn is_trunk(&self) -> bool {
        matches!(self, VlanMode::Trunk(_))
    }

    /// The edit for a frame of `vlan`, tagged on input or not, leaving here.
    #[inline]
    pub fn egress_edit(&self, vlan: u16, tagged_in: bool) -> TagEdit {
        match (tagged_in, self.is_trunk()) {
            (false, true) => TagEdit::Push(vlan),
            (true, false) => TagEdit::Pop,
            _ => TagEdit::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_port_takes_untagged_only() {
        let a = VlanMode::Access(10);
        assert_eq!(a.ingress(None), Ok(10));
        assert_eq!(a.ingress(Some(10)), Err(DropReason::VlanFiltered));
        assert_eq!(a.ingress(Some(0)), Err(DropReason::VlanFiltered), "priority tag");
        assert!(a.carries(10) && !a.carries(20));
    }

    #[test]
    fn trunk_takes_its_tags_only() {
        let t = VlanMode::Trunk(Box::new(VlanSet::new(&[10, 20, 4094])));
        assert_eq!(t.ingress(Some(20)), Ok(20));
        assert_eq!(t.ingress(Some(4094)), Ok(4094));
        assert_eq!(t.ingress(Some(30)), Err(DropReason::VlanFiltered));
        assert_eq!(t.ingress(None), Err(DropReason::VlanFiltered));
        assert_eq!(t.ingress(Some(0)), Err(DropReason::VlanFiltered));
        assert!(t.carries(10) && !t.carries(11));
        assert_eq!(VlanSet::new(&[10, 20]).iter().collect::<Vec<_>>(), [10, 20]);
    }

    #[test]
    fn edits_between_access_and_trunk() {
        let a = VlanMode::Access(10);
        let t = VlanMode::Trunk(Box::new(VlanSet::new(&[10])));
        assert_eq!(t.egress_edit(10, false), TagEdit::Push(10));
        assert_eq!(a.egress_edit(10, true), TagEdit::Pop);
        assert_eq!(a.egress_edit(10, false), TagEdit::Keep);
        assert_eq!(t.egress_edit(10, true), TagEdit::Keep);
    }
}
