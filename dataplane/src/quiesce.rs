//! The one mechanism by which configuration reaches PMD threads.
//!
//! The control thread sends each PMD thread its new plan by message, then
//! bumps the epoch. Between bursts a PMD thread compares the epoch with the
//! last one it saw (one acquire load per iteration, no lock); when it moved,
//! it takes its messages, drops its old plan (queue handles included) and
//! acknowledges the epoch. When every thread has acknowledged, no PMD thread
//! uses anything from before: the control thread may then close ports,
//! reuse slots, or let rte_vhost free a device.
//!
//! A thread asleep until a guest kicks (`idle`) also waits on its
//! doorbell, which each bump rings: a new plan never waits for a kick.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmd_bridge::eventfd::EventFd;

pub struct Quiesce {
    epoch: AtomicU64,
    acks: Vec<AtomicU64>,
    /// Per thread; None if no eventfd could be made (that thread then
    /// never sleeps until kicked).
    doorbells: Vec<Option<Arc<EventFd>>>,
}

impl Quiesce {
    pub fn new(threads: usize) -> Quiesce {
        Quiesce {
            epoch: AtomicU64::new(0),
            acks: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            doorbells: (0..threads).map(|_| EventFd::new().ok().map(Arc::new)).collect(),
        }
    }

    /// What thread `thread` sleeps on besides its guests' kicks.
    pub fn doorbell(&self, thread: usize) -> Option<&Arc<EventFd>> {
        self.doorbells.get(thread)?.as_ref()
    }

    /// Read by a PMD thread once per iteration. Acquire: pairs with the
    /// release in `bump`, so messages sent before the bump are visible.
    #[inline]
    pub fn current(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A PMD thread has applied everything up to `epoch`. Release: the
    /// control thread that sees the ack also sees that the old plan is gone.
    #[inline]
    pub fn ack(&self, thread: usize, epoch: u64) {
        self.acks[thread].store(epoch, Ordering::Release);
    }

    /// Starts a new epoch (after sending the messages that belong to it),
    /// waking the threads that sleep until kicked.
    pub fn bump(&self) -> u64 {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.doorbells.iter().flatten().for_each(|d| {
            d.signal();
        });
        epoch
    }

    /// Waits until every thread acknowledged `epoch`. The control thread
    /// may sleep; PMD threads never wait here.
    pub fn wait(&self, epoch: u64, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.acks.iter().all(|a| a.load(Ordering::Acquire) >= epoch) {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    pub fn threads(&self) -> usize {
        self.acks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn control_waits_for_every_thread() {
        let q = Arc::new(Quiesce::new(2));
        let e = q.bump();
        assert!(!q.wait(e, Duration::from_millis(5)));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    let mut seen = 0;
                    while seen < e {
                        seen = q.current();
                    }
                    q.ack(i, seen);
                })
            })
            .collect();
        assert!(q.wait(e, Duration::from_secs(10)));
        threads.into_iter().for_each(|t| t.join().unwrap());
    }
}
