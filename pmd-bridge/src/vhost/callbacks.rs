//! What rte_vhost calls on its own threads: the device callbacks and the
//! message hooks of sockets whose rings the caller walks. Each only records
//! an event for the thread that owns the socket, or waits for handles to be
//! dropped; the rules they follow are in the parent module's documentation.
use std::collections::HashMap;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::VhostEvent;
use crate::ffi;

pub(super) struct DeviceLease {
    pub(super) vid: i32,
    /// Held by every `GuestMemory` of the device: the pre-message hook
    /// waits for it before rte_vhost remaps memory or moves rings.
    pub(super) mem: Arc<()>,
    /// From the pre-message hook of such a request until its post hook: no
    /// `GuestMemory` may be made meanwhile (the hook's wait alone would let
    /// one be made after it, over a table or log the handler is replacing).
    pub(super) changing: AtomicBool,
}

impl DeviceLease {
    fn new(vid: i32) -> DeviceLease {
        DeviceLease { vid, mem: Arc::new(()), changing: AtomicBool::new(false) }
    }
}

pub(super) struct SocketShared {
    pub(super) events: Mutex<Sender<VhostEvent>>,
    /// The caller walks the rings itself (`set_features`): message hooks on.
    pub(super) owns_rings: AtomicBool,
    /// Live devices by vid. The map holds one reference to each lease; a
    /// handle holds another.
    pub(super) devices: Mutex<HashMap<i32, Arc<DeviceLease>>>,
}

pub(super) static SOCKETS: Mutex<Vec<(String, Arc<SocketShared>)>> = Mutex::new(Vec::new());

fn socket_of(vid: i32) -> Option<Arc<SocketShared>> {
    let mut buf = [0 as c_char; 4096];
    // SAFETY: buf is a writable buffer of the length passed.
    if unsafe { ffi::rte_vhost_get_ifname(vid, buf.as_mut_ptr(), buf.len()) } != 0 {
        return None;
    }
    // SAFETY: rte_vhost NUL-terminates the name within buf.
    let path = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    let sockets = SOCKETS.lock().ok()?;
    sockets.iter().find(|(p, _)| *p == path).map(|(_, s)| Arc::clone(s))
}

fn lease_of(vid: i32) -> Option<Arc<DeviceLease>> {
    socket_of(vid)?.devices.lock().ok()?.get(&vid).cloned()
}

fn record(vid: i32, ev: VhostEvent) -> Option<Arc<SocketShared>> {
    let sock = socket_of(vid)?;
    if let Ok(tx) = sock.events.lock() {
        let _ = tx.send(ev);
    }
    Some(sock)
}

// The callbacks must not unwind into C; each body is small and panic-free
// except for poisoned mutexes, which are treated as "nothing to do".
extern "C" fn cb_new_device(vid: c_int) -> c_int {
    if let Some(sock) = socket_of(vid) {
        if let Ok(mut devs) = sock.devices.lock() {
            devs.insert(vid, Arc::new(DeviceLease::new(vid)));
        }
        if let Ok(tx) = sock.events.lock() {
            let _ = tx.send(VhostEvent::NewDevice { vid });
        }
    }
    0
}

extern "C" fn cb_destroy_device(vid: c_int) {
    let Some(sock) = record(vid, VhostEvent::DestroyDevice { vid }) else { return };
    let lease = sock.devices.lock().ok().and_then(|mut d| d.remove(&vid));
    let Some(lease) = lease else { return };
    // Wait for every handle to go: after we return, the library frees the
    // device. See the module documentation.
    wait_released(&lease, vid, "destroy");
}

extern "C" fn cb_vring_state_changed(vid: c_int, queue: u16, enable: c_int) -> c_int {
    record(vid, VhostEvent::VringState { vid, queue, enabled: enable != 0 });
    0
}

extern "C" fn cb_features_changed(vid: c_int, features: u64) -> c_int {
    record(vid, VhostEvent::FeaturesChanged { vid, features });
    0
}

extern "C" fn cb_new_connection(vid: c_int) -> c_int {
    if let Some(sock) = record(vid, VhostEvent::NewConnection { vid }) {
        if sock.owns_rings.load(Ordering::Relaxed) {
            // SAFETY: a static table of two functions; registering only
            // stores the pointer in the new device (no lock taken).
            unsafe { ffi::rte_vhost_extern_callback_register(vid, &HOOKS.0, std::ptr::null_mut()) };
        }
    }
    0
}

// vhost-user requests (vhost_user.h of DPDK 22.11) after which our copy of
// the memory table or ring addresses would be stale.
const SET_FEATURES: u32 = 2;
const SET_MEM_TABLE: u32 = 5;
const SET_LOG_BASE: u32 = 6;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;
const SEND_RARP: u32 = 19;
const RING_CHANGES: [u32; 8] =
    [SET_FEATURES, SET_MEM_TABLE, SET_LOG_BASE, SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL];

/// The request code: the first 32 bits of every vhost-user message.
fn request(msg: *mut std::os::raw::c_void) -> Option<u32> {
    // SAFETY: rte_vhost passes its message buffer, which starts with the
    // 32-bit request field; a null pointer is refused.
    (!msg.is_null()).then(|| unsafe { msg.cast::<u32>().read_unaligned() })
}

/// Before a request that remaps memory or moves rings: record it, then wait
/// until every `GuestMemory` of the device is dropped (all queue locks are
/// held here, so the threads we wait for must not take them: the own-ring
/// datapath calls only `rte_vhost_vring_call_nonblock`).
unsafe extern "C" fn hook_pre(vid: c_int, msg: *mut std::os::raw::c_void) -> ffi::rte_vhost_msg_result {
    let _ = std::panic::catch_unwind(|| {
        let req = request(msg);
        if req == Some(SEND_RARP) {
            record(vid, VhostEvent::RarpRequested { vid });
        }
        match (req, lease_of(vid)) {
            (Some(req), lease) if RING_CHANGES.contains(&req) => {
                // Closed before looking for holders; `guest_memory` takes
                // its token before looking at the flag. With a full fence on
                // each side, at least one of the two sees the other.
                if let Some(lease) = &lease {
                    lease.changing.store(true, Ordering::Relaxed);
                    fence(Ordering::SeqCst);
                }
                record(vid, VhostEvent::RingsChanging { vid, request: req });
                if let Some(lease) = lease {
                    wait_released(&lease.mem, vid, "memory or ring change");
                }
            }
            // Requests are handled one at a time: a change still open here
            // failed in its handler, which skips the post hook.
            (_, Some(lease)) if lease.changing.swap(false, Ordering::SeqCst) => {
                record(vid, VhostEvent::RingsChanged { vid, request: 0 });
            }
            _ => {}
        }
    });
    ffi::rte_vhost_msg_result_RTE_VHOST_MSG_RESULT_NOT_HANDLED
}

/// After such a request: the caller may take the memory and rings again.
unsafe extern "C" fn hook_post(vid: c_int, msg: *mut std::os::raw::c_void) -> ffi::rte_vhost_msg_result {
    let _ = std::panic::catch_unwind(|| {
        if let Some(req) = request(msg).filter(|r| RING_CHANGES.contains(r)) {
            if let Some(lease) = lease_of(vid) {
                lease.changing.store(false, Ordering::SeqCst);
            }
            record(vid, VhostEvent::RingsChanged { vid, request: req });
        }
    });
    ffi::rte_vhost_msg_result_RTE_VHOST_MSG_RESULT_NOT_HANDLED
}

struct Hooks(ffi::rte_vhost_user_extern_ops);
// SAFETY: two function pointers, never written after initialisation.
unsafe impl Sync for Hooks {}

static HOOKS: Hooks = Hooks(ffi::rte_vhost_user_extern_ops { pre_msg_handle: Some(hook_pre), post_msg_handle: Some(hook_post) });

/// How long a vhost-user request waits for a device's handles to be dropped
/// before it gives up: the thread it blocks serves every device's messages.
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);

/// Waits until `token` has no holder but its owner, warning every 5 s. Past
/// `RELEASE_DEADLINE` the process aborts, saying why: going on would let
/// rte_vhost unmap memory or free the device under a handle still held (a
/// use after unmap), and waiting for good would hold every guest's vhost
/// control. A holder that late is a stuck thread (a dead PMD thread drops
/// its plan as it unwinds); the service manager restarts the switch, and
/// guests resume as after any SIGKILL.
fn wait_released<T>(token: &Arc<T>, vid: i32, what: &str) {
    if !wait_released_within(token, vid, what, RELEASE_DEADLINE) {
        eprintln!("pmd-bridge: vhost device {vid}: {what}: aborting: its memory may not be unmapped under a thread that still uses it");
        std::process::abort();
    }
}

fn wait_released_within<T>(token: &Arc<T>, vid: i32, what: &str, deadline: Duration) -> bool {
    let start = Instant::now();
    let mut warned = Duration::ZERO;
    loop {
        let holders = Arc::strong_count(token);
        if holders <= 1 {
            // `strong_count` is a relaxed load; each holder dropped its
            // clone with a release decrement. The fence pairs with those:
            // a PMD thread's last accesses through its handles happen
            // before our caller lets rte_vhost unmap or free what they
            // pointed to.
            fence(Ordering::Acquire);
            return true;
        }
        let waited = start.elapsed();
        if waited >= deadline {
            eprintln!(
                "pmd-bridge: vhost device {vid}: {what}: gave up after {waited:?} waiting for {} handle(s) to be dropped",
                holders - 1
            );
            return false;
        }
        if waited > warned + Duration::from_secs(5) {
            warned = waited;
            eprintln!("pmd-bridge: vhost device {vid}: {what} waits for its handles to be dropped ({warned:?})");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

extern "C" fn cb_destroy_connection(vid: c_int) {
    record(vid, VhostEvent::DestroyConnection { vid });
}

pub(super) struct Ops(pub(super) ffi::rte_vhost_device_ops);
// SAFETY: the table holds only function pointers and a null reserved slot,
// and is never written after initialisation.
unsafe impl Sync for Ops {}

pub(super) static OPS: Ops = Ops(ffi::rte_vhost_device_ops {
    new_device: Some(cb_new_device),
    destroy_device: Some(cb_destroy_device),
    vring_state_changed: Some(cb_vring_state_changed),
    features_changed: Some(cb_features_changed),
    new_connection: Some(cb_new_connection),
    destroy_connection: Some(cb_destroy_connection),
    guest_notified: None,
    reserved: [std::ptr::null_mut()],
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_released_returns_when_the_last_holder_drops_and_gives_up_at_its_deadline() {
        let token = Arc::new(());
        let held = Arc::clone(&token);
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
        });
        assert!(wait_released_within(&token, 1, "test", Duration::from_secs(10)));
        holder.join().unwrap();

        let _stuck = Arc::clone(&token);
        let start = Instant::now();
        assert!(!wait_released_within(&token, 1, "test", Duration::from_millis(50)));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
