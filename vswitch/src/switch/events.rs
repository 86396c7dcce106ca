//! rte_vhost's events for the switch's vhost-user ports: guests that come
//! and go, and rings or memory that change under a copy-once port.
use std::sync::Arc;

use pmd_bridge::VhostEvent;

use super::{PortIo, PortState, Switch};

impl Switch {
    /// Takes what rte_vhost reported and replans if a device came or went.
    pub fn poll_events(&mut self) {
        let mut events = Vec::new();
        for st in self.ports.iter().flatten() {
            if let PortIo::Vhost { sock, .. } = &st.io {
                while let Some(ev) = sock.try_event() {
                    events.push((st.slot, ev));
                }
            }
        }
        let mut changed = false;
        for (slot, ev) in events {
            match self.on_event(slot, ev) {
                Ok(c) => changed |= c,
                Err(e) => eprintln!("vswitchd: port in slot {slot}: {e}"),
            }
        }
        if changed {
            if let Err(e) = self.replan() {
                eprintln!("vswitchd: replan failed: {e}");
            }
        }
    }

    /// One vhost event; true if the plans must change. Events that need
    /// the PMD threads off a device first (its destruction, a change of its
    /// memory or rings on a copy-once port) replan right here.
    fn on_event(&mut self, slot: u16, ev: VhostEvent) -> Result<bool, String> {
        let Some(PortState { cfg, io: PortIo::Vhost { sock, dev, own, enabled_pairs }, .. }) = self.ports[slot as usize].as_mut() else {
            return Ok(false);
        };
        // A socket may get a second connection while a guest is up; only
        // the first device's events count (the other is not polled, and its
        // destroy waits for nothing of ours).
        let current = dev.as_ref().map(|d| d.vid());
        let mine = |vid: i32| current.is_none_or(|c| c == vid);
        match ev {
            VhostEvent::NewDevice { vid } if current.is_none() => {
                let d = Arc::new(sock.device(vid).ok_or("device already gone")?);
                if let Some(own) = own.as_mut() {
                    // A request may already be changing the rings again: then
                    // they are mapped on its RingsChanged.
                    match own.attach(&d) {
                        Ok(()) => eprintln!("vswitchd: port {}: guest up, rings (avail/used) {}", cfg.name, own.describe()),
                        Err(e) => eprintln!("vswitchd: port {}: guest up, rings not mapped yet: {e}", cfg.name),
                    }
                }
                *dev = Some(d);
                Ok(true)
            }
            VhostEvent::NewDevice { vid } => {
                eprintln!("vswitchd: port {}: a second guest (vid {vid}) connected; ignored", cfg.name);
                Ok(false)
            }
            VhostEvent::DestroyDevice { vid } if current == Some(vid) => {
                // rte_vhost waits in destroy_device until every handle is
                // dropped: take the device out of the plans first (copy-once
                // rings come back), hand our ring indices back, then let go.
                if let Some(own) = own.as_mut() {
                    own.release();
                }
                *enabled_pairs = 0;
                let d = dev.take();
                self.replan()?;
                if let (Some(d), Some(PortState { cfg, io: PortIo::Vhost { own: Some(own), .. }, .. })) = (d.as_ref(), self.ports[slot as usize].as_mut()) {
                    eprintln!("vswitchd: port {}: guest gone, rings (avail/used) {}", cfg.name, own.describe());
                    own.hand_back(d);
                }
                Ok(false)
            }
            VhostEvent::RingsChanging { vid, .. } if current == Some(vid) && own.as_ref().is_some_and(|o| o.mem.is_some()) => {
                // The pre-message hook waits until no GuestMemory is left.
                own.as_mut().expect("checked").release();
                self.replan()?;
                Ok(false)
            }
            VhostEvent::RingsChanged { vid, .. } if current == Some(vid) => match (own.as_mut(), dev.as_ref()) {
                (Some(o), Some(d)) => {
                    o.remap(d, false)?;
                    Ok(true)
                }
                _ => Ok(false),
            },
            // A pair counts once its guest-transmit ring is enabled.
            VhostEvent::VringState { vid, queue, enabled } if queue % 2 == 1 && mine(vid) => {
                let pair = queue / 2 + 1;
                *enabled_pairs = if enabled { (*enabled_pairs).max(pair) } else { (*enabled_pairs).min(pair - 1) };
                Ok(dev.is_some())
            }
            VhostEvent::NewConnection { .. } if current.is_none() => {
                *enabled_pairs = 0;
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}
