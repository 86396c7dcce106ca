//! rte_vhost's events for the switch's vhost-user ports: guests that come
//! and go, and rings or memory that change under a copy-once port.
//!
//! A guest that resets its device in a loop would make every reset two
//! switch-wide replans, and hold rte_vhost's one vhost-events thread (which
//! serves every guest's vhost-user messages) in destroy_device until the
//! control loop let go of it. So each port's device arrivals are counted
//! over a sliding second: past `FLAP_LIMIT` the port is backed off, its new
//! devices are held (recorded, not attached: no replan, no handle of ours,
//! so their destruction waits for nothing) and the last one still alive is
//! attached by `tick` when the back-off is over. Back-offs grow from
//! `BACKOFF_MIN` to `BACKOFF_MAX` while the guest keeps at it, and start
//! over after `BACKOFF_QUIET`. Other ports' events are never delayed.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmd_bridge::{VhostDevice, VhostSocket, VhostEvent};

use super::slots::Slot;
use super::{PortIo, PortState, Switch};
use crate::copy_once_state::{kept_positions, CopyOnceState};

/// More device arrivals than this within `FLAP_WINDOW` back a port off.
const FLAP_LIMIT: usize = 5;
const FLAP_WINDOW: Duration = Duration::from_secs(1);
/// The first back-off; each one that follows another within
/// `BACKOFF_QUIET` of its end is twice as long, up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const BACKOFF_QUIET: Duration = Duration::from_secs(10);
/// Arrivals remembered per port at most (a rate past this is reported as this).
const ARRIVALS_KEPT: usize = 1024;

/// One port's reconnect history (for the port of generation `gen` in its
/// slot; a new port in the slot starts afresh).
#[derive(Default)]
pub(super) struct Flaps {
    gen: u16,
    /// Device arrivals within the last `FLAP_WINDOW`.
    arrivals: VecDeque<Instant>,
    /// The last back-off's length, and when it ends (or ended).
    step: Duration,
    until: Option<Instant>,
    /// A device that arrived while the port was backed off, attached (if
    /// still alive) when the back-off is over. It holds no handle of ours.
    pending: Option<i32>,
}

/// What to do with a device that arrived.
enum Arrival {
    Attach,
    /// The port is backed off already: hold the device.
    Hold,
    /// The port is backed off from now on, for `wait`: hold the device.
    BackOff { per_second: usize, wait: Duration },
}

impl Flaps {
    /// This slot's record for the port of generation `gen`.
    fn of(&mut self, gen: u16) -> &mut Flaps {
        if self.gen != gen {
            *self = Flaps { gen, ..Flaps::default() };
        }
        self
    }

    fn backed_off(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    fn arrive(&mut self, now: Instant) -> Arrival {
        while self.arrivals.front().is_some_and(|&t| now.duration_since(t) >= FLAP_WINDOW) {
            self.arrivals.pop_front();
        }
        if self.arrivals.len() < ARRIVALS_KEPT {
            self.arrivals.push_back(now);
        }
        if self.backed_off(now) {
            return Arrival::Hold;
        }
        if self.arrivals.len() <= FLAP_LIMIT {
            return Arrival::Attach;
        }
        let again = self.until.is_some_and(|u| now.duration_since(u) < BACKOFF_QUIET);
        self.step = if again { (self.step * 2).clamp(BACKOFF_MIN, BACKOFF_MAX) } else { BACKOFF_MIN };
        self.until = Some(now + self.step);
        Arrival::BackOff { per_second: self.arrivals.len(), wait: self.step }
    }
}

/// Makes `d` the port's device; true (the plans must change).
fn attach(name: &str, sock: &VhostSocket, d: VhostDevice, dev: &mut Option<Arc<VhostDevice>>, own: &mut Option<CopyOnceState>) -> bool {
    let d = Arc::new(d);
    if let Some(own) = own.as_mut() {
        // A request may already be changing the rings again: then
        // they are mapped on its RingsChanged.
        match own.attach(&d, &kept_positions(sock.path())) {
            Ok(()) => eprintln!("vswitchd: port {name}: guest up, rings (avail/used) {}", own.describe()),
            Err(e) => eprintln!("vswitchd: port {name}: guest up, rings not mapped yet: {e}"),
        }
    }
    *dev = Some(d);
    true
}

impl Switch {
    /// Takes what rte_vhost reported and replans if a device came or went.
    pub fn poll_events(&mut self) {
        let mut events = Vec::new();
        for st in self.slots.ports() {
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

    /// Called from `tick`: attaches each device held while its port was
    /// backed off, once the back-off is over, if it is still alive (one
    /// whose destruction began is forgotten).
    pub(super) fn attach_held(&mut self) {
        let now = Instant::now();
        let mut changed = false;
        for Slot { port, flaps, .. } in self.slots.iter_mut() {
            let Some(vid) = flaps.pending else { continue };
            if flaps.backed_off(now) {
                continue;
            }
            flaps.pending = None;
            let Some(PortState { cfg, gen, io: PortIo::Vhost { sock, dev, own, .. }, .. }) = port.as_mut() else { continue };
            if *gen != flaps.gen || dev.is_some() {
                continue;
            }
            if let Some(d) = sock.device(vid) {
                eprintln!("vswitchd: port {}: back-off over; attaching its guest (vid {vid})", cfg.name);
                changed |= attach(&cfg.name, sock, d, dev, own);
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
        let Slot { port: Some(PortState { cfg, gen, io: PortIo::Vhost { sock, dev, own, enabled_pairs }, .. }), flaps, .. } = &mut self.slots[slot] else {
            return Ok(false);
        };
        let flaps = flaps.of(*gen);
        // A socket may get a second connection while a guest is up; only
        // the first device's events count (the other is not polled, and its
        // destroy waits for nothing of ours). A device held while the port
        // is backed off is that first device too, though in no plan: its
        // ring changes need no replan, and its destruction none either.
        let current = dev.as_ref().map(|d| d.vid());
        let owner = current.or(flaps.pending);
        let mine = |vid: i32| owner.is_none_or(|o| o == vid);
        match ev {
            VhostEvent::NewDevice { vid } if current.is_none() => {
                if flaps.pending.is_some_and(|p| p != vid && sock.device(p).is_some()) {
                    eprintln!("vswitchd: port {}: a second guest (vid {vid}) connected; ignored", cfg.name);
                    return Ok(false);
                }
                // Counted even if it is gone already: a guest that resets
                // faster than this loop looks is flapping all the more.
                match flaps.arrive(Instant::now()) {
                    Arrival::Attach => {
                        flaps.pending = None;
                        let d = sock.device(vid).ok_or("device already gone")?;
                        Ok(attach(&cfg.name, sock, d, dev, own))
                    }
                    Arrival::Hold => {
                        flaps.pending = Some(vid);
                        Ok(false)
                    }
                    Arrival::BackOff { per_second, wait } => {
                        flaps.pending = Some(vid);
                        eprintln!(
                            "vswitchd: port {}: guest reconnecting {per_second} times a second; attaching it again in {} ms",
                            cfg.name,
                            wait.as_millis()
                        );
                        Ok(false)
                    }
                }
            }
            VhostEvent::NewDevice { vid } => {
                eprintln!("vswitchd: port {}: a second guest (vid {vid}) connected; ignored", cfg.name);
                Ok(false)
            }
            VhostEvent::DestroyDevice { vid } if current.is_none() && flaps.pending == Some(vid) => {
                // Held, never attached: nothing of ours to take back.
                flaps.pending = None;
                *enabled_pairs = 0;
                Ok(false)
            }
            VhostEvent::DestroyDevice { vid } if current == Some(vid) => {
                // rte_vhost waits in destroy_device until every handle is
                // dropped: take the device out of the plans first (copy-once
                // rings come back), hand our ring indices back, then let go.
                // The memory stays ours meanwhile: chains NICs still hold
                // go back into its rings (`depart`).
                *enabled_pairs = 0;
                let d = dev.take();
                self.replan()?;
                if let (Some(d), Some(PortState { cfg, io: PortIo::Vhost { own: Some(own), .. }, .. })) = (d, self.slots[slot].port.as_mut()) {
                    eprintln!("vswitchd: port {}: guest gone, rings (avail/used) {}", cfg.name, own.describe());
                    own.forget_positions();
                    let (name, own) = (cfg.name.clone(), std::mem::take(own));
                    self.depart(&name, d, own, None);
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
            VhostEvent::NewConnection { .. } if owner.is_none() => {
                *enabled_pairs = 0;
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_port_is_backed_off_past_the_limit_longer_each_time_and_afresh_after_a_quiet_while() {
        let t0 = Instant::now();
        let mut f = Flaps::default();
        let f = f.of(1);
        for i in 0..FLAP_LIMIT as u64 {
            assert!(matches!(f.arrive(t0 + ms(10 * i)), Arrival::Attach));
        }
        let t = t0 + ms(60);
        assert!(matches!(f.arrive(t), Arrival::BackOff { per_second: 6, wait } if wait == BACKOFF_MIN));
        assert!(matches!(f.arrive(t + ms(50)), Arrival::Hold));
        // Still flapping when it ends: twice as long.
        assert!(matches!(f.arrive(t + ms(100)), Arrival::BackOff { wait, .. } if wait == 2 * BACKOFF_MIN));
        let mut t = t + ms(100);
        let mut last = 2 * BACKOFF_MIN;
        for _ in 0..10 {
            // Held every 10 ms of the back-off; backed off again at its end.
            let end = t + last;
            while t + ms(10) < end {
                t += ms(10);
                assert!(matches!(f.arrive(t), Arrival::Hold));
            }
            t = end;
            match f.arrive(t) {
                Arrival::BackOff { wait, .. } => {
                    assert_eq!(wait, (2 * last).min(BACKOFF_MAX));
                    last = wait;
                }
                _ => panic!("still flapping"),
            }
        }
        assert_eq!(last, BACKOFF_MAX);
        // A guest that comes back now and then is attached each time.
        t += last + FLAP_WINDOW;
        assert!(matches!(f.arrive(t), Arrival::Attach));
        // After a quiet while, a new storm starts from the first step.
        let t = t + BACKOFF_QUIET;
        for i in 0..FLAP_LIMIT as u64 {
            assert!(matches!(f.arrive(t + ms(i)), Arrival::Attach));
        }
        assert!(matches!(f.arrive(t + ms(9)), Arrival::BackOff { wait, .. } if wait == BACKOFF_MIN));
        // A new port in the slot starts afresh.
        assert!(matches!(f.of(2).arrive(t + ms(10)), Arrival::Attach));
    }
}
