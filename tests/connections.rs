//! Slow and idle clients against a real host: request headers have a deadline
//! (`--header-timeout-ms`), and each listener holds at most `--max-connections` at once.

mod support;

use std::time::{Duration, Instant};

use support::{Host, Redis, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slow connections opened at once in the slowloris test.
const ATTACKERS: usize = 50;
/// How long a test waits for the host to close a connection before calling it held open. The
/// host is started with a header timeout of one second; this is the generous bound.
const CLOSE_BOUND: Duration = Duration::from_secs(15);

/// The address part of `http://ADDR`.
fn address(host: &Host) -> String {
    host.url.trim_start_matches("http://").to_owned()
}

/// Sends `opening`, then one more byte of a header that never ends every 100 ms (when
/// `trickle`), reading all the while; returns how long the host took to close the connection
/// (EOF, a reset, or a 408 followed by EOF), or `None` if it was still open after
/// [`CLOSE_BOUND`].
async fn time_until_closed(
    mut stream: TcpStream,
    opening: &[u8],
    trickle: bool,
) -> Option<Duration> {
    let started = Instant::now();
    if stream.write_all(opening).await.is_err() {
        return Some(started.elapsed());
    }
    let mut buf = [0u8; 1024];
    while started.elapsed() < CLOSE_BOUND {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            // EOF or a reset: closed. Bytes (a 408): keep reading until it closes.
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) if trickle => {
                if stream.write_all(b"a").await.is_err() {
                    return Some(started.elapsed());
                }
            }
            Err(_) => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sending_headers_a_byte_at_a_time_are_cut_off_while_others_are_served() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--header-timeout-ms", "1000"]);
    let addr = address(&host);
    let mut attackers = Vec::new();
    for i in 0..ATTACKERS {
        let stream = TcpStream::connect(&addr).await.expect("connect");
        // Half stall in the request line, half in the headers.
        let opening: &'static [u8] = if i % 2 == 0 {
            b"GET /hea"
        } else {
            b"GET /healthz HTTP/1.1\r\nHost: goldfish\r\nX-Slow: "
        };
        attackers.push(tokio::spawn(time_until_closed(stream, opening, true)));
    }

    // During the attack, an ordinary request is served at once.
    let started = Instant::now();
    let response = client()
        .get(format!("{}/healthz", host.url))
        .send()
        .await
        .expect("GET /healthz during the attack");
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a normal request waited {:?} behind {ATTACKERS} slow clients",
        started.elapsed()
    );

    let mut slowest = Duration::ZERO;
    for attacker in attackers {
        let closed = attacker.await.expect("attacker task");
        let Some(after) = closed else {
            panic!(
                "a client sending its headers a byte every 100 ms was still connected after \
                 {CLOSE_BOUND:?} (header timeout 1 s)"
            );
        };
        slowest = slowest.max(after);
    }
    eprintln!("{ATTACKERS} slow clients all closed within {slowest:?} (header timeout 1 s)");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--header-timeout-ms", "1000"]);
    let stream = TcpStream::connect(address(&host)).await.expect("connect");
    let closed = time_until_closed(stream, b"", false).await;
    assert!(
        closed.is_some(),
        "a silent connection was still open after {CLOSE_BOUND:?} (header timeout 1 s)"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_serves_several_requests() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let mut stream = TcpStream::connect(address(&host)).await.expect("connect");
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: goldfish\r\n\r\n")
            .await
            .expect("write");
        let answer = read_answer(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
    }
}

/// Reads one short answer (headers and a small body arrive together from the host).
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn past_max_connections_a_new_connection_waits_until_one_closes() {
    let redis = Redis::start();
    let host = Host::start_tuned(
        &redis,
        &["--max-connections", "3", "--header-timeout-ms", "60000"],
    );
    let addr = address(&host);
    // Three connections that hold their places (the kernel queues accepts in order, so these
    // are the three the host takes).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let mut waiting = TcpStream::connect(&addr).await.expect("connect");
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: goldfish\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(1500), waiting.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a fourth connection was served while three were open (--max-connections 3): {early:?}"
    );
    drop(held.pop());
    let answer = read_answer(&mut waiting).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
