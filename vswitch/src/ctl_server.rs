//! The control socket: a thread that accepts vswitchctl connections, one
//! thread per client (a few at once), each handing its requests to the
//! control loop, which owns the switch.
//!
//! A client is local but not trusted to behave: a request longer than
//! `MAX_REQUEST` is refused and its connection closed, a client that stops
//! reading or writing is timed out, and at most `MAX_CLIENTS` are served at
//! once (the next one gets an error), so no client can hold the socket
//! from the others.
//!
//! `CaptureStart` is the one request whose answer goes on: the client's
//! thread then writes the capture (`capture::stream`) until it ends, stops
//! it and closes the connection.
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::capture::{self, CaptureSummary, Handoff};
use crate::protocol::{CaptureFormat, CaptureStarted, CaptureStopped, Command, Request, Response, VERSION};

/// A request and where its answer goes.
pub type Job = (Command, Sender<Response>);

/// Longest request line: a `port add` is a few hundred bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Clients served at once.
pub const MAX_CLIENTS: usize = 16;
/// How long a client may take to send a request or read an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `path` (root-only: 0600, in a directory no one else may write)
/// and serves it on a thread; started captures are taken from `captures`.
pub fn serve(path: &Path, captures: Handoff) -> Result<Receiver<Job>, String> {
    private_dir(path.parent().unwrap_or(Path::new("/")))?;
    let listener = UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    let (tx, rx) = channel();
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("vswitchd-ctl".into())
        .spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
                let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
                if clients.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::Relaxed);
                    let _ = answer(&mut conn, &Response::err("too many control clients; try again"));
                    continue;
                }
                let (jobs, count, captures) = (tx.clone(), Arc::clone(&clients), captures.clone());
                let spawned = std::thread::Builder::new().name("vswitchd-ctl-client".into()).spawn(move || {
                    let _ = serve_one(conn, &jobs, &captures);
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

/// Creates `dir` (0700) if it is missing; refuses one that is a link,
/// is not ours, or that others may write: they could replace the socket
/// with their own and take the commands meant for the switch.
fn private_dir(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| format!("control socket directory {}: {e}", dir.display()))?;
    }
    let md = std::fs::symlink_metadata(dir).map_err(|e| format!("control socket directory {}: {e}", dir.display()))?;
    // /proc/self belongs to our effective user.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).map_err(|e| e.to_string())?;
    if !md.is_dir() || md.uid() != me || md.mode() & 0o022 != 0 {
        return Err(format!(
            "control socket directory {}: must be a directory of uid {me} that no one else may write (mode {:o}, uid {})",
            dir.display(),
            md.mode() & 0o7777,
            md.uid()
        ));
    }
    Ok(())
}

fn answer(conn: &mut UnixStream, resp: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_string(resp).unwrap_or_else(|_| "{}".into());
    out.push('\n');
    conn.write_all(out.as_bytes())
}

fn serve_one(conn: UnixStream, jobs: &Sender<Job>, captures: &Handoff) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let mut line = String::new();
    loop {
        line.clear();
        // One byte over the limit tells a long request from one at it.
        if reader.by_ref().take(MAX_REQUEST as u64 + 1).read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.len() > MAX_REQUEST {
            return answer(&mut writer, &Response::err(format!("request longer than {MAX_REQUEST} bytes")));
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::err(format!("bad request: {e}")),
            Ok(r) if r.version != VERSION => {
                Response::err(format!("protocol version {} not supported; this vswitchd speaks {VERSION}", r.version))
            }
            Ok(r) => {
                if let Command::CaptureStart { count, timeout_secs, .. } = r.command {
                    let started = ask(jobs, r.command);
                    return serve_capture(writer, jobs, captures, started, count, timeout_secs);
                }
                ask(jobs, r.command)
            }
        };
        answer(&mut writer, &resp)?;
    }
}

/// Hands `command` to the control loop and waits for its answer.
fn ask(jobs: &Sender<Job>, command: Command) -> Response {
    let (tx, rx) = channel();
    if jobs.send((command, tx)).is_err() {
        Response::err("vswitchd is shutting down")
    } else {
        rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| Response::err("vswitchd did not answer"))
    }
}

/// Answers a `CaptureStart` (`started`), then writes the capture, in the
/// format the answer says, on the connection until it ends, stops it, and
/// sends the summary.
fn serve_capture(mut conn: UnixStream, jobs: &Sender<Job>, captures: &Handoff, started: Response, count: Option<u64>, timeout: Option<u64>) -> std::io::Result<()> {
    let session = serde_json::from_value::<CaptureStarted>(started.result.clone()).ok().and_then(|c| Some((captures.take(c.id)?, c.format)));
    answer(&mut conn, &started)?;
    let Some((s, format)) = session else { return Ok(()) };
    let deadline = timeout.map(|t| std::time::Instant::now() + Duration::from_secs(t));
    let probe = conn.try_clone()?;
    let written = capture::stream(&s, format, &mut conn, count, deadline, |wait| client_waits(&probe, wait));
    let stopped = ask(jobs, Command::CaptureStop { id: s.id });
    let dropped = serde_json::from_value::<CaptureStopped>(stopped.result).map_or(0, |c| c.dropped);
    capture::finish(&mut conn, &CaptureSummary { port: s.port.clone(), captured: written?, dropped })
}

/// Waits up to `wait` for the capture's client to close the connection
/// (or send anything: it wants the capture to end); true if it did not.
fn client_waits(mut conn: &UnixStream, wait: Duration) -> bool {
    if conn.set_read_timeout(Some(wait)).is_err() {
        return false;
    }
    matches!(conn.read(&mut [0u8; 1]), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// Sends `command` and reads the answer's line; the reader may hold
/// more (a capture).
fn send(path: &Path, command: Command, timeout: Option<Duration>) -> Result<(Response, BufReader<UnixStream>), String> {
    let conn = UnixStream::connect(path).map_err(|e| format!("cannot connect to {}: {e} (is vswitchd running?)", path.display()))?;
    conn.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(&Request { version: VERSION, command }).map_err(|e| e.to_string())?;
    line.push('\n');
    (&conn).write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(conn);
    let mut reply = String::new();
    reader.read_line(&mut reply).map_err(|e| e.to_string())?;
    let resp = serde_json::from_str(&reply).map_err(|e| format!("bad reply from vswitchd: {e}"))?;
    Ok((resp, reader))
}

/// One request, one answer: what vswitchctl does.
pub fn request(path: &Path, command: Command) -> Result<Response, String> {
    send(path, command, Some(Duration::from_secs(60))).map(|(r, _)| r)
}

/// A `CaptureStart`: the capture (pcap or pcapng) into `out` until it
/// ends, and its summary. It may be quiet for long: no read timeout.
pub fn capture(path: &Path, command: Command, out: &mut impl Write) -> Result<CaptureSummary, String> {
    let asked = match &command {
        Command::CaptureStart { format, .. } => *format,
        _ => CaptureFormat::Pcap,
    };
    let (resp, mut reader) = send(path, command, None)?;
    if !resp.ok {
        return Err(resp.error.unwrap_or_default());
    }
    // A daemon that does not know the format would write pcap into a file
    // named for pcapng: refused, not written.
    let started: CaptureStarted = serde_json::from_value(resp.result).map_err(|e| format!("bad capture answer: {e}"))?;
    if started.format != asked {
        return Err(format!("this vswitchd writes {:?} captures only, not {asked:?}", started.format));
    }
    capture::receive(&mut reader, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control socket whose "control loop" answers every job with ok.
    fn server(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("ctl.sock");
        let jobs = serve(&path, Handoff::default()).unwrap();
        std::thread::spawn(move || {
            for (_, reply) in jobs {
                let _ = reply.send(Response::ok(serde_json::Value::Null));
            }
        });
        path
    }

    #[test]
    fn regression_the_control_socket_needs_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = serve(&shared.join("ctl.sock"), Handoff::default()).unwrap_err();
        assert!(err.contains("no one else may write"), "{err}");
        serve(&dir.path().join("new/ctl.sock"), Handoff::default()).unwrap();
        let md = std::fs::metadata(dir.path().join("new")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o700, "created root's alone");
    }

    #[test]
    fn regression_a_silent_client_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path());
        let _silent = UnixStream::connect(&path).unwrap();
        let (tx, rx) = channel();
        let p = path.clone();
        std::thread::spawn(move || tx.send(request(&p, Command::ShowPorts)).unwrap());
        // Served one at a time, the request would wait out the silent
        // client's 10 s read timeout.
        let r = rx.recv_timeout(Duration::from_secs(5)).expect("answered while another client is connected");
        assert!(r.unwrap().ok);
    }

    #[test]
    fn regression_an_endless_request_is_refused_and_others_still_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path());
        let mut conn = UnixStream::connect(&path).unwrap();
        let _ = conn.write_all(&vec![b'x'; MAX_REQUEST + 100]);
        let mut reply = String::new();
        BufReader::new(&conn).read_line(&mut reply).unwrap();
        assert!(reply.contains("request longer than"), "{reply}");
        assert!(request(&path, Command::ShowPorts).unwrap().ok);
    }

    #[test]
    fn clients_beyond_the_limit_are_told_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path());
        let held: Vec<_> = (0..MAX_CLIENTS).map(|_| UnixStream::connect(&path).unwrap()).collect();
        let r = testbed::wait_until(Duration::from_secs(5), "a refusal", || {
            let conn = UnixStream::connect(&path).ok()?;
            let mut reply = String::new();
            BufReader::new(&conn).read_line(&mut reply).ok()?;
            reply.contains("too many").then_some(reply)
        });
        assert!(r.is_ok(), "{r:?}");
        drop(held);
        assert!(testbed::wait_until(Duration::from_secs(5), "service again", || request(&path, Command::ShowPorts).ok().filter(|r| r.ok)).is_ok());
    }
}
