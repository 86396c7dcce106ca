//! Packet captures: the sessions running, each in every plan as a tap on
//! its port (`dataplane::capture`), and what starts and stops them.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dataplane::capture::{Taps, MAX_SNAPLEN};

use super::Switch;
use crate::capture::{Handoff, Session};
use crate::protocol::{CaptureDirection, CaptureFormat, CaptureStarted, CaptureStopped};

/// Captures at once: each costs 8 MiB per PMD thread.
const MAX_CAPTURES: usize = 4;

#[derive(Default)]
pub(super) struct Captures {
    sessions: Vec<Arc<Session>>,
    /// Where a started session waits for the thread that writes it.
    pub handoff: Handoff,
    next_id: u64,
}

impl Switch {
    /// The handoff the control socket takes started captures from.
    pub fn capture_handoff(&self) -> Handoff {
        self.captures.handoff.clone()
    }

    pub(super) fn capture_start(&mut self, port: &str, direction: CaptureDirection, snaplen: u32, format: CaptureFormat) -> Result<CaptureStarted, String> {
        let slot = self.slots.by_name(port).ok_or_else(|| format!("no port named {port:?}"))?;
        if !(1..=MAX_SNAPLEN).contains(&snaplen) {
            return Err(format!("snap length {snaplen} is out of range 1..={MAX_SNAPLEN}"));
        }
        let c = &mut self.captures;
        if c.sessions.len() >= MAX_CAPTURES {
            return Err(format!("{MAX_CAPTURES} captures are running already"));
        }
        c.next_id += 1;
        let id = c.next_id;
        let s = Arc::new(Session::new(id, port, (slot, self.slots[slot].gen), direction, snaplen, self.pmds.len()));
        c.sessions.push(Arc::clone(&s));
        if let Err(e) = self.replan() {
            self.captures.sessions.retain(|s| s.id != id);
            return Err(e);
        }
        self.captures.handoff.put(s);
        Ok(CaptureStarted { id, snaplen, format })
    }

    /// Takes the session's taps out of the plans: once this returns, no
    /// thread writes its rings.
    pub(super) fn capture_stop(&mut self, id: u64) -> Result<CaptureStopped, String> {
        let i = self.captures.sessions.iter().position(|s| s.id == id).ok_or_else(|| format!("no capture {id}"))?;
        let s = self.captures.sessions.remove(i);
        self.replan()?;
        let (taken, dropped) = s.counts();
        Ok(CaptureStopped { taken, dropped })
    }

    /// Thread `i`'s taps: the sessions whose port is still there.
    pub(super) fn taps(&self, i: usize) -> Taps {
        let live = |s: &&Arc<Session>| self.slots.port(s.slot).is_some_and(|p| p.gen == s.gen);
        Taps(self.captures.sessions.iter().filter(live).map(|s| s.tap(i)).collect())
    }

    /// The port in `slot` is gone: its captures end.
    pub(super) fn end_captures(&self, slot: u16) {
        for s in self.captures.sessions.iter().filter(|s| s.slot == slot) {
            s.ended.store(true, Relaxed);
        }
    }
}
