//! The admin API under abuse, against a real `hub` process (issue 19): idle and slow
//! connections, a stop while clients hold connections, token guessing, and a data directory
//! other local users cannot read.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt,
    time::Duration,
};

use common::*;
use switchboard_hub::client::admin::AdminClient;

/// A hub whose admin API holds at most 40 connections, 10 per address, and waits 2 s for
/// headers.
fn small_hub(dir: &std::path::Path) -> HubProcess {
    HubProcess::start_configured(
        dir,
        "[admin]\nmax_connections = 40\nmax_connections_per_address = 10\nheader_timeout_secs = 2\n",
    )
}

/// One HTTP/1.1 request on a fresh connection; the status and the whole answer.
fn request(admin: SocketAddr, token: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

/// Whether the hub closed `stream` (read answers end of stream) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_and_slow_connections_do_not_keep_the_operator_out() {
    let dir = tempfile::tempdir().unwrap();
    let hub = small_hub(dir.path());
    let admin = hub.admin;
    let operator = hub.admin_client();
    // 300 connections that say nothing, and 100 that start a request and never finish its
    // headers, all from the operator's own address.
    let mut idle: Vec<TcpStream> =
        (0..300).filter_map(|_| TcpStream::connect(admin).ok()).collect();
    let mut slow: Vec<TcpStream> = (0..100)
        .filter_map(|_| {
            let mut s = TcpStream::connect(admin).ok()?;
            s.write_all(b"GET /v1/metrics HTTP/1.1\r\nHost: hub\r\nX-Slow: ").ok()?;
            Some(s)
        })
        .collect();
    // The operator still gets answers, again and again, while those are held.
    for _ in 0..5 {
        let metrics = tokio::time::timeout(Duration::from_secs(10), operator.metrics()).await;
        assert!(matches!(metrics, Ok(Ok(_))), "the operator was kept out: {metrics:?}");
    }
    // The hub holds no more than its caps: of 400 connections, the oldest were closed to
    // make room (at most 10 per address are open).
    // Give the hub a moment to take what is still in the listen backlog.
    let mut still_open = usize::MAX;
    for _ in 0..50 {
        still_open = idle
            .iter_mut()
            .chain(slow.iter_mut())
            .map(|s| closed_within(s, Duration::from_millis(2)))
            .filter(|closed| !closed)
            .count();
        if still_open <= 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(still_open <= 10, "{still_open} of 400 connections still open");
    drop((idle, slow));

    // A connection whose headers do not arrive within header_timeout_secs (2 s) is closed by
    // the hub, without any other connection needing its slot.
    let mut lone = TcpStream::connect(admin).unwrap();
    lone.write_all(b"GET /v1/metrics HTTP/1.1\r\nHost: hub\r\n").unwrap();
    assert!(closed_within(&mut lone, Duration::from_secs(15)), "a slow request was held open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_hub_while_clients_hold_admin_connections() {
    let dir = tempfile::tempdir().unwrap();
    let hub = small_hub(dir.path());
    let token = hub.admin_client();
    // Idle connections, a slow one, and a kept-alive one that has made a request.
    let _idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(hub.admin).unwrap()).collect();
    let mut slow = TcpStream::connect(hub.admin).unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\n").unwrap();
    let mut kept = TcpStream::connect(hub.admin).unwrap();
    kept.write_all(b"GET /v1/health HTTP/1.1\r\nHost: hub\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    token.metrics().await.unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut hub = hub;
        let _ = tx.send(hub.terminate());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(clean) => assert!(clean, "the hub did not exit cleanly"),
        Err(_) => panic!("the hub did not stop within 20 s of SIGTERM while connections were open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_tokens_is_held_back_with_429_and_retry_after_but_not_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let real = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    for i in 0..10 {
        let (status, answer) = request(hub.admin, &format!("guess{i}"), "/v1/metrics");
        assert_eq!(status, 401, "{answer}");
    }
    // The eleventh guess is not even checked.
    let (status, answer) = request(hub.admin, "guess-more", "/v1/metrics");
    assert_eq!(status, 429, "{answer}");
    let secs = retry_after(&answer);
    assert!((1..=60).contains(&secs), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    // A user token from the same address waits too; the operator does not.
    let user_token = hub.token("someone@example.org").await;
    assert_eq!(request(hub.admin, &user_token, "/v1/contacts").0, 429);
    assert_eq!(request(hub.admin, real.trim(), "/v1/metrics").0, 200);
    let operator = AdminClient::new(hub.admin, real.trim().to_string());
    operator.metrics().await.unwrap();
}

/// The seconds of a 429 answer's `Retry-After`.
fn retry_after(answer: &str) -> u64 {
    let retry = answer
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: ").or_else(|| l.strip_prefix("Retry-After: ")))
        .expect("Retry-After");
    retry.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_past_its_request_rate_gets_429_and_others_and_the_operator_go_on() {
    let dir = tempfile::tempdir().unwrap();
    // A rate slow enough that the test's requests cannot refill it.
    let hub = HubProcess::start_configured(
        dir.path(),
        "[admin]\nrequests_per_second_per_token = 1\nrequest_burst_per_token = 20\n",
    );
    let greedy = hub.token("greedy@example.org").await;
    let other = hub.token("other@example.org").await;
    let answers: Vec<_> = (0..30).map(|_| request(hub.admin, &greedy, "/v1/contacts")).collect();
    let ok = answers.iter().take_while(|(status, _)| *status == 200).count();
    // The burst, and perhaps a token or two refilled while the requests ran.
    assert!((20..=25).contains(&ok), "{ok} answered before the limit");
    let (status, answer) = &answers[29];
    assert_eq!(*status, 429, "{answer}");
    assert!((1..=2).contains(&retry_after(answer)), "{answer}");
    assert!(answer.contains("requests a second with this token"), "{answer}");
    // Another user's token and the operator are not held back by it.
    assert_eq!(request(hub.admin, &other, "/v1/contacts").0, 200);
    let operator = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    for _ in 0..30 {
        assert_eq!(request(hub.admin, operator.trim(), "/v1/metrics").0, 200);
    }
    // Once it waited as told, the greedy token is answered again.
    tokio::time::sleep(Duration::from_secs(retry_after(&answers[29].1))).await;
    assert_eq!(request(hub.admin, &greedy, "/v1/contacts").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_past_its_request_rate_gets_429_whatever_tokens_it_uses() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start_configured(
        dir.path(),
        "[admin]\nrequests_per_second_per_address = 1\nrequest_burst_per_address = 10\n",
    );
    // Tokens made through the operator, which spends nothing.
    let mut tokens = Vec::new();
    for i in 0..12 {
        tokens.push(hub.token(&format!("user{i}@example.org")).await);
    }
    // A fresh token per request does not escape the address's bucket.
    let statuses: Vec<u16> =
        tokens.iter().map(|t| request(hub.admin, t, "/v1/contacts").0).collect();
    assert!(statuses[..10].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[11], 429, "{statuses:?}");
    // Nor do requests without a token, which are refused before they are looked at.
    assert_eq!(request(hub.admin, "", "/v1/contacts").0, 429);
    let operator = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    assert_eq!(request(hub.admin, operator.trim(), "/v1/metrics").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_readable_by_the_hubs_user_alone() {
    let dir = tempfile::tempdir().unwrap();
    // A new directory is made 0700.
    let fresh = dir.path().join("fresh");
    let hub = HubProcess::start(&fresh);
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    let token_mode =
        std::fs::metadata(fresh.join("admin.token")).unwrap().permissions().mode() & 0o777;
    assert_eq!(token_mode, 0o600, "{token_mode:o}");
    drop(hub);
    // One opened up to others is closed again at start.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _hub = HubProcess::start(&open);
    let mode = std::fs::metadata(&open).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_at_the_request_timeout_and_a_cap_of_busy_connections_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start_configured(
        dir.path(),
        "[admin]\nmax_connections_per_address = 4\nrequest_timeout_secs = 6\n",
    );
    // Four requests that promise a body and never send it: each is in progress.
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(hub.admin).unwrap();
            s.write_all(
                b"POST /v1/users HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer any\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    // Time for the hub to take them (on a loaded machine, 0.5 s was not always enough).
    std::thread::sleep(Duration::from_millis(2000));
    // A fifth finds every slot busy: a clear 503, not a silent close.
    let (status, answer) = request(hub.admin, "whatever", "/v1/health");
    assert_eq!(status, 503, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    // The slow ones are answered 408 once the request timeout passes.
    for stream in &mut slow {
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    // Then there is room again.
    assert_eq!(request(hub.admin, "whatever", "/v1/health").0, 200);
}

/// Any request on a fresh connection: the status, the headers (lower-cased) and the body.
fn raw(admin: SocketAddr, head: &str, body: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("{head}\r\nHost: hub\r\nConnection: close\r\n\r\n{body}");
    // The hub may answer before it has read the body (and stop reading it): a failed write of
    // the rest is not an error here.
    let _ = stream.write_all(request.as_bytes());
    // Read up to the end of the answer's body (by its length), not to the end of the stream:
    // a hub that answered without reading a body need not close at once.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&answer[end + 4..end + 4 + length]).to_string();
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                return (status, head, body);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                panic!("no whole answer to {head}: {}", String::from_utf8_lossy(&answer))
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_and_one_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim());
    let json = "Content-Type: application/json";
    let cases: Vec<(String, String, u16)> = vec![
        (format!("GET /v1/nothing-here HTTP/1.1\r\n{auth}"), String::new(), 404),
        (format!("DELETE /v1/users HTTP/1.1\r\n{auth}"), String::new(), 405),
        (
            format!("POST /v1/users HTTP/1.1\r\n{auth}\r\nContent-Length: 15"),
            r#"{"name":"a@b.c"}"#[..15].into(),
            415,
        ),
        (
            format!("POST /v1/users HTTP/1.1\r\n{auth}\r\n{json}\r\nContent-Length: 2"),
            "{}".into(),
            400,
        ),
        (
            format!("POST /v1/users HTTP/1.1\r\n{auth}\r\n{json}\r\nContent-Length: 10"),
            r#"{"name":7}"#.into(),
            400,
        ),
        (
            format!("POST /v1/users HTTP/1.1\r\n{auth}\r\n{json}\r\nContent-Length: 5"),
            "{nope".into(),
            400,
        ),
        (
            format!("POST /v1/users HTTP/1.1\r\n{auth}\r\n{json}\r\nContent-Length: 9000000"),
            String::new(),
            413,
        ),
        (
            format!("POST /v1/users HTTP/1.1\r\n{auth}\r\n{json}\r\nContent-Length: 2500000"),
            " ".repeat(2_500_000),
            413,
        ),
        (format!("GET /v1/org/events?after=abc HTTP/1.1\r\n{auth}"), String::new(), 400),
        (format!("GET /v1/org/events?after=-1 HTTP/1.1\r\n{auth}"), String::new(), 400),
        (format!("GET /v1/org/events?after=1e3 HTTP/1.1\r\n{auth}"), String::new(), 400),
        (
            format!("GET /v1/org/events?after=18446744073709551616 HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
        ),
    ];
    for (head, body, want) in cases {
        let (status, headers, answer) = raw(hub.admin, &head, &body);
        assert_eq!(status, want, "{head}\n{headers}\n{answer}");
        assert!(headers.contains("content-type: application/json"), "{head}\n{headers}");
        let parsed: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{head}: {e}: {answer}"));
        let text = parsed["error"].as_str().unwrap_or_else(|| panic!("{head}: {answer}"));
        assert!(!text.is_empty(), "{head}");
        if want == 405 {
            assert!(headers.contains("allow:"), "{headers}");
        }
    }
    // A wrong token, and no token with a malformed body: 401 with a challenge, and the body is
    // never parsed (no 400 telling the caller what the body should look like).
    let (status, headers, answer) =
        raw(hub.admin, "GET /v1/metrics HTTP/1.1\r\nAuthorization: Bearer wrong", "");
    assert_eq!(status, 401, "{answer}");
    assert!(headers.contains("www-authenticate: bearer"), "{headers}");
    let (status, headers, answer) =
        raw(hub.admin, &format!("POST /v1/users HTTP/1.1\r\n{json}\r\nContent-Length: 5"), "{nope");
    assert_eq!(status, 401, "{answer}");
    assert!(headers.contains("www-authenticate: bearer"), "{headers}");
    assert!(answer.contains("\"error\""), "{answer}");
    // Health needs no token.
    assert_eq!(raw(hub.admin, "GET /v1/health HTTP/1.1", "").0, 200);
}
