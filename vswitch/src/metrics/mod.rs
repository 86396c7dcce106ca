//! `GET /metrics` for Prometheus (`[switch] metrics`).
//!
//! A thread of its own accepts connections and a thread per client (a few
//! at once) reads one request, asks the control loop for the `show`
//! answers through a channel like the control socket's, and writes them
//! in the Prometheus text format (`render`). No PMD thread takes part, and
//! the control loop spends on a scrape what six `vswitchctl show` cost.
//!
//! A client is not trusted to behave: a request head longer than
//! `MAX_REQUEST` or not sent within `CLIENT_TIMEOUT` is refused, an answer
//! not taken within `CLIENT_TIMEOUT` is given up, at most `MAX_CLIENTS` are
//! served at once (the next one is refused), and every connection is
//! closed after one answer.
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ctl_server::Job;

mod render;
use render::Snapshot;

/// Longest request head: Prometheus sends a few hundred bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Clients served at once.
pub const MAX_CLIENTS: usize = 8;
/// How long a client may take to send its request, and to take the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for the control loop (busy with a port change,
/// say): Prometheus gives up after 10 s by default.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(8);

/// Binds `addr`, so that a taken port is refused before the switch starts.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))
}

/// Serves `listener` on a thread; scrapes come to the control loop as jobs.
pub fn serve(listener: TcpListener) -> Result<Receiver<Job>, String> {
    let (tx, rx) = channel();
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("vswitchd-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else {
                    // Out of descriptors, say: back off rather than spin
                    // on the control thread's core.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                if clients.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::Relaxed);
                    // Best effort, without waiting for the request: a
                    // few bytes into a new socket's empty buffer do not
                    // block, but a request that came first turns the close
                    // into a reset, which the client may see instead.
                    let _ = conn.write_all(&reply("503 Service Unavailable", "", "text/plain", b"too many clients; try again\n"));
                    continue;
                }
                let (jobs, count) = (tx.clone(), Arc::clone(&clients));
                let spawned = std::thread::Builder::new().name("vswitchd-metrics-client".into()).spawn(move || {
                    serve_one(conn, &jobs);
                    count.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    clients.fetch_sub(1, Ordering::Relaxed);
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(rx)
}

fn serve_one(mut conn: TcpStream, jobs: &Sender<Job>) {
    let answer = match read_head(&mut conn) {
        Ok((method, path)) => answer(&method, &path, jobs),
        Err(Refused::Gone) => return,
        Err(Refused::TooLong) => reply("431 Request Header Fields Too Large", "", "text/plain", b"request too long\n"),
        Err(Refused::Malformed) => reply("400 Bad Request", "", "text/plain", b"bad request\n"),
        Err(Refused::TimedOut) => reply("408 Request Timeout", "", "text/plain", b"request not sent in time\n"),
    };
    if write_by(&mut conn, &answer, Instant::now() + CLIENT_TIMEOUT).is_ok() {
        linger(&mut conn);
    }
}

/// Closes after the client has read the answer: bytes of its still unread
/// (a body, the rest of a long head) would make the close a reset, and a
/// reset can discard the answer before the client reads it.
fn linger(conn: &mut TcpStream) {
    const MAX: usize = 64 * 1024;
    let _ = conn.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let (mut scratch, mut drained) = ([0u8; 4096], 0);
    while drained < MAX {
        let Some(left) = until(deadline) else { return };
        if conn.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match conn.read(&mut scratch) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn answer(method: &str, target: &str, jobs: &Sender<Job>) -> Vec<u8> {
    // Prometheus may add `params` as a query string: they change nothing.
    let path = target.split('?').next().unwrap_or(target);
    match (path, method) {
        ("/metrics", "GET") => match scrape(jobs) {
            Ok(text) => reply("200 OK", "", render::CONTENT_TYPE, text.as_bytes()),
            Err(e) => reply("503 Service Unavailable", "", "text/plain", format!("{e}\n").as_bytes()),
        },
        ("/metrics", _) => reply("405 Method Not Allowed", "Allow: GET\r\n", "text/plain", b"only GET\n"),
        _ => reply("404 Not Found", "", "text/plain", b"not found: try /metrics\n"),
    }
}

/// Asks the control loop every `show` at once (it answers them in one
/// iteration), then renders the answers.
fn scrape(jobs: &Sender<Job>) -> Result<String, String> {
    let mut waiting = Vec::new();
    for cmd in render::commands() {
        let (tx, rx) = channel();
        jobs.send((cmd, tx)).map_err(|_| "vswitchd is shutting down")?;
        waiting.push(rx);
    }
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let mut results = Vec::new();
    for rx in waiting {
        let r = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).map_err(|_| "vswitchd did not answer in time")?;
        if !r.ok {
            return Err(r.error.unwrap_or_default());
        }
        results.push(r.result);
    }
    let results = results.try_into().expect("one result per command");
    Snapshot::decode(results)?.render().map_err(|e| e.to_string())
}

fn reply(status: &str, headers: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n", body.len());
    [head.as_bytes(), body].concat()
}

enum Refused {
    TooLong,
    Malformed,
    TimedOut,
    /// Closed or failed: no one to answer.
    Gone,
}

/// Reads one request head, however it is cut, until `CLIENT_TIMEOUT` from
/// now: its method and target. A body is never read: the answer closes.
fn read_head(conn: &mut TcpStream) -> Result<(String, String), Refused> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        let left = until(deadline).ok_or(Refused::TimedOut)?;
        conn.set_read_timeout(Some(left)).map_err(|_| Refused::Gone)?;
        match conn.read(&mut buf[len..]) {
            Ok(0) => return Err(Refused::Gone),
            Ok(n) => len += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err(Refused::TimedOut),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(Refused::Gone),
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let (method, path) = (req.method.unwrap_or_default(), req.path.unwrap_or_default());
                return Ok((method.to_string(), path.to_string()));
            }
            Ok(httparse::Status::Partial) if len == buf.len() => return Err(Refused::TooLong),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(Refused::TooLong),
            Err(_) => return Err(Refused::Malformed),
        }
    }
}

/// Writes `data` unless the client takes longer than until `deadline`.
fn write_by(conn: &mut TcpStream, mut data: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !data.is_empty() {
        let left = until(deadline).ok_or(ErrorKind::TimedOut)?;
        conn.set_write_timeout(Some(left))?;
        match conn.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The time left until `deadline`, if any (a zero timeout means none).
fn until(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests;
