//! Frame sizes of a trial: fixed, IMIX, or 64 KB TSO segments.
use serde::{Deserialize, Serialize};

use crate::frame::{self, IMIX, TCP_HEADERS, TSO_MSS, TSO_PAYLOAD};

/// Frame sizes of a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Size {
    Fixed(usize),
    Imix,
    /// 64 KB TCP segments (`frame::TSO_PAYLOAD` bytes of payload, MSS
    /// `frame::TSO_MSS`) with TSO requested of the switch.
    Tso,
}

impl Size {
    /// 64..=9000 (bytes, FCS included), `imix` or `tso64k`.
    pub fn parse(s: &str) -> Option<Size> {
        match s {
            "imix" => Some(Size::Imix),
            "tso64k" | "tso" => Some(Size::Tso),
            n => n.parse::<usize>().ok().filter(|n| (64..=9000).contains(n)).map(Size::Fixed),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Size::Fixed(n) => n.to_string(),
            Size::Imix => "imix".into(),
            Size::Tso => "tso64k".into(),
        }
    }

    /// Mean frame size (for Gbps); a TSO segment counts as the one frame
    /// the guest hands over.
    pub fn mean(&self) -> f64 {
        match self {
            Size::Fixed(n) => *n as f64,
            Size::Imix => IMIX.iter().sum::<usize>() as f64 / IMIX.len() as f64,
            Size::Tso => (TCP_HEADERS + TSO_PAYLOAD + frame::FCS) as f64,
        }
    }

    /// Bytes on an Ethernet wire per packet sent, preamble and gap
    /// included; a TSO segment as the MSS-sized frames it becomes.
    pub fn wire_bytes(&self) -> f64 {
        match self {
            Size::Tso => (TSO_PAYLOAD / TSO_MSS as usize * (TSO_MSS as usize + TCP_HEADERS + frame::FCS + 20)) as f64,
            _ => self.mean() + 20.0,
        }
    }

    /// TCP payload bytes per packet sent (0: not a TCP scenario).
    pub fn tcp_payload(&self) -> u64 {
        match self {
            Size::Tso => TSO_PAYLOAD as u64,
            _ => 0,
        }
    }

    pub(crate) fn cycle(&self) -> Vec<usize> {
        match self {
            Size::Fixed(n) => vec![*n],
            Size::Imix => IMIX.to_vec(),
            Size::Tso => vec![TCP_HEADERS + TSO_PAYLOAD],
        }
    }
}

