//! Waiting on progress, with a deadline.
use std::time::{Duration, Instant};

/// Polls `cond` until it returns `Some`, backing off from 1 ms to 50 ms, and
/// fails with `what` if `timeout` passes first.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
