//! The control socket: a thread that accepts vswitchctl connections and
//! hands each request to the control loop, which owns the switch.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use crate::protocol::{Command, Request, Response, VERSION};

/// A request and where its answer goes.
pub type Job = (Command, Sender<Response>);

/// Binds `path` (root-only: 0600) and serves it on a thread.
pub fn serve(path: &Path) -> Result<Receiver<Job>, String> {
    let listener = UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("vswitchd-ctl".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                if serve_one(conn, &tx).is_err() {
                    continue;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(rx)
}

fn serve_one(conn: UnixStream, jobs: &Sender<Job>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        let resp = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::err(format!("bad request: {e}")),
            Ok(r) if r.version != VERSION => {
                Response::err(format!("protocol version {} not supported; this vswitchd speaks {VERSION}", r.version))
            }
            Ok(r) => {
                let (tx, rx) = channel();
                if jobs.send((r.command, tx)).is_err() {
                    Response::err("vswitchd is shutting down")
                } else {
                    rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| Response::err("vswitchd did not answer"))
                }
            }
        };
        let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
        out.push('\n');
        writer.write_all(out.as_bytes())?;
        line.clear();
    }
    Ok(())
}

/// One request, one answer: what vswitchctl does.
pub fn request(path: &Path, command: Command) -> Result<Response, String> {
    let conn = UnixStream::connect(path).map_err(|e| format!("cannot connect to {}: {e} (is vswitchd running?)", path.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(&Request { version: VERSION, command }).map_err(|e| e.to_string())?;
    line.push('\n');
    (&conn).write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(&conn).read_line(&mut reply).map_err(|e| e.to_string())?;
    serde_json::from_str(&reply).map_err(|e| format!("bad reply from vswitchd: {e}"))
}
