use super::*;
use crate::protocol::{Command, Response};
use serde_json::json;

/// A metrics server whose "control loop" answers like an idle switch with
/// no port; unless `answering`, with the control loop gone.
fn server(answering: bool) -> SocketAddr {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let jobs = serve(listener).unwrap();
    if !answering {
        drop(jobs);
        return addr;
    }
    std::thread::spawn(move || {
        for (cmd, reply) in jobs {
            let result = match cmd {
                Command::ShowCopies => json!({ "paths": [] }),
                Command::ShowMempool => json!({ "size": 1023, "free": 1000, "in_use": 23 }),
                _ => json!([]),
            };
            let _ = reply.send(Response::ok(result));
        }
    });
    addr
}

/// Sends `request` and reads the answer: status line, head, body.
fn send(addr: SocketAddr, request: &[u8]) -> (String, String, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = conn.write_all(request);
    read_answer(&mut conn)
}

fn read_answer(conn: &mut TcpStream) -> (String, String, String) {
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    send(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n").as_bytes())
}

#[test]
fn get_metrics_is_a_scrape() {
    let addr = server(true);
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(body.lines().any(|l| l == "vswitch_mempool_in_use_mbufs 23"), "{body}");
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    assert_eq!(get(addr, "/metrics?format=text").0, "HTTP/1.1 200 OK", "a query changes nothing");
}

#[test]
fn anything_else_is_404_or_405() {
    let addr = server(true);
    for path in ["/", "/metrics/", "/metricsx", "/../metrics"] {
        assert_eq!(get(addr, path).0, "HTTP/1.1 404 Not Found", "{path}");
    }
    for method in ["POST", "HEAD", "PUT", "DELETE"] {
        let (status, head, _) = send(addr, format!("{method} /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").as_bytes());
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed", "{method}");
        assert!(head.contains("Allow: GET"), "{head}");
    }
}

#[test]
fn bad_requests_are_refused() {
    let addr = server(true);
    assert_eq!(send(addr, b"\x01\x02 nonsense\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
    assert_eq!(send(addr, b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
    let long = format!("GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "x".repeat(MAX_REQUEST));
    assert_eq!(send(addr, long.as_bytes()).0, "HTTP/1.1 431 Request Header Fields Too Large");
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(send(addr, format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes()).0, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(get(addr, "/metrics").0, "HTTP/1.1 200 OK", "still serving");
}

#[test]
fn a_silent_client_does_not_hold_up_the_others() {
    let addr = server(true);
    let _silent = TcpStream::connect(addr).unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || tx.send(get(addr, "/metrics").0).unwrap());
    // Served one at a time, the scrape would wait out the silent client.
    let status = rx.recv_timeout(CLIENT_TIMEOUT / 2).expect("answered while another client is connected");
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn a_client_dribbling_its_request_is_cut_off() {
    let addr = server(true);
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // A byte at a time, each well within any per-read timeout: only a
    // deadline for the whole head ends it.
    let started = Instant::now();
    let request = b"GET /metrics HTTP/1.1\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'x'));
    let mut answer = Vec::new();
    for &b in request {
        conn.write_all(&[b]).unwrap();
        if conn.read_to_end(&mut answer).is_ok() {
            break;
        }
        assert!(started.elapsed() < 4 * CLIENT_TIMEOUT, "never cut off");
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout"), "{answer}");
}

#[test]
fn clients_beyond_the_limit_are_refused() {
    let addr = server(true);
    let held: Vec<_> = (0..MAX_CLIENTS).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // A 503, or a reset when the request came before the refusal.
    let scrape = || {
        let mut conn = TcpStream::connect(addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let refused = testbed::wait_until(Duration::from_secs(10), "a refusal", || match scrape() {
        Some(t) if t.starts_with("HTTP/1.1 200") => None,
        other => Some(other),
    });
    let refused = refused.unwrap();
    assert!(refused.as_ref().is_none_or(|t| t.starts_with("HTTP/1.1 503") && t.contains("too many clients")), "{refused:?}");
    drop(held);
    let again = testbed::wait_until(Duration::from_secs(10), "service again", || scrape().filter(|t| t.starts_with("HTTP/1.1 200")));
    assert!(again.is_ok(), "{again:?}");
}

#[test]
fn a_scrape_without_a_control_loop_is_503() {
    let addr = server(false);
    let (status, _, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert!(body.contains("shutting down"), "{body}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = bind(addr).unwrap_err();
    assert!(e.starts_with(&format!("metrics: cannot listen on {addr}: ")) && e.contains("in use"), "{e}");
}
