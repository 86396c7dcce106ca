//! OpenFlow connections: the bridge's management socket (a unix socket,
//! as OVS's `br0.mgmt`, for `ovs-ofctl`) and the controller the switch
//! connects out to (`tcp:IP:PORT`, again after a growing pause when it
//! goes away). A thread per connection reads whole messages and hands
//! them to the agent on the control thread, which alone writes.
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use super::{read_message, Header};

/// Connections served at once on the management socket.
pub const MAX_CONNS: usize = 16;
/// A peer that stops reading is dropped after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(8);

pub type ConnId = u64;

/// The agent's end of a connection: it writes, and closes it when the
/// peer misbehaves.
pub trait Peer: std::io::Write + Send {
    fn close(&mut self);
}

impl Peer for UnixStream {
    fn close(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Peer for TcpStream {
    fn close(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

/// What the connection threads tell the agent.
pub enum Event {
    /// `controller`: the connection out to the controller (it gets the
    /// asynchronous messages; the management socket's tools do not).
    Up { id: ConnId, writer: Box<dyn Peer>, peer: String, controller: bool },
    Message { id: ConnId, header: Header, body: Vec<u8> },
    Down { id: ConnId },
}

/// A stream the switch can both read on a thread and write from the agent.
trait Stream: std::io::Read + Peer + Sized + 'static {
    fn split(&self) -> std::io::Result<Self>;
    fn set_write_timeout(&self, t: Duration) -> std::io::Result<()>;
}

impl Stream for UnixStream {
    fn split(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn set_write_timeout(&self, t: Duration) -> std::io::Result<()> {
        UnixStream::set_write_timeout(self, Some(t))
    }
}

impl Stream for TcpStream {
    fn split(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn set_write_timeout(&self, t: Duration) -> std::io::Result<()> {
        TcpStream::set_write_timeout(self, Some(t))
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Reads `s` until it closes or breaks; the agent is told of it first.
fn serve<S: Stream>(s: S, peer: String, controller: bool, events: &Sender<Event>) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) as ConnId;
    let Ok(writer) = s.split() else { return };
    let _ = writer.set_write_timeout(WRITE_TIMEOUT);
    if events.send(Event::Up { id, writer: Box::new(writer), peer, controller }).is_err() {
        return;
    }
    let mut r = s;
    while let Ok((header, body)) = read_message(&mut r) {
        if events.send(Event::Message { id, header, body }).is_err() {
            return;
        }
    }
    let _ = events.send(Event::Down { id });
}

/// Binds the management socket (0600) and serves it on a thread.
pub fn listen(path: &Path, events: Sender<Event>) -> Result<(), String> {
    let listener = UnixListener::bind(path).map_err(|e| format!("OpenFlow socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| format!("OpenFlow socket {}: {e}", path.display()))?;
    let conns = Arc::new(AtomicUsize::new(0));
    let name = path.display().to_string();
    std::thread::Builder::new()
        .name("vswitchd-of".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if conns.fetch_add(1, Ordering::Relaxed) >= MAX_CONNS {
                    conns.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                let (events, count, peer) = (events.clone(), Arc::clone(&conns), format!("unix:{name}"));
                let spawned = std::thread::Builder::new().name("vswitchd-of-conn".into()).spawn(move || {
                    serve(conn, peer, false, &events);
                    count.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    conns.fetch_sub(1, Ordering::Relaxed);
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// `tcp:IP:PORT` as an address.
pub fn parse_target(s: &str) -> Result<SocketAddr, String> {
    let addr = s.strip_prefix("tcp:").ok_or_else(|| format!("{s:?}: only tcp:IP:PORT controllers are supported"))?;
    addr.parse().map_err(|_| format!("{s:?}: not tcp:IP:PORT (an IP literal and a port)"))
}

/// Keeps a connection to the controller at `addr` on a thread.
pub fn connect(addr: SocketAddr, events: Sender<Event>) -> Result<(), String> {
    std::thread::Builder::new()
        .name("vswitchd-of-ctrl".into())
        .spawn(move || {
            let mut pause = RECONNECT_MIN;
            loop {
                if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    let _ = s.set_nodelay(true);
                    pause = RECONNECT_MIN;
                    serve(s, format!("tcp:{addr}"), true, &events);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(RECONNECT_MAX);
                // The agent is gone: the switch is stopping.
                if events.send(Event::Down { id: 0 }).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
