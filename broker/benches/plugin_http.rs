//! Plugin contract 0.2 (issue #18): the host's overhead on one outbound call of a plugin's
//! `http` capability, against a loopback server that answers at once (its own time is in every
//! row alike, so the differences are the host's).
//!
//! 1. `raw tcp`: one keep-alive HTTP/1.1 request and response over a `std::net::TcpStream`: the
//!    floor (two loopback trips through the kernel).
//! 2. `reqwest`: the same request through a plain reqwest client (the HTTP library the host
//!    uses), awaited on the runtime from a blocking thread as the host does.
//! 3. `plugin http`: `PluginHttp::send` as a plugin's call makes it: the origin and address
//!    checks, a host-held secret substituted into its bound header, the deadline, the response
//!    read within the size cap, the secret redacted from it, and the `plugin_http` audit event.
//!
//! ```sh
//! taskset -c 1 cargo bench -p concierge --bench plugin_http
//! ```
//!
//! Progress goes to stderr, a Markdown table to stdout. `CONCIERGE_BENCH_ITERS` (default 5000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concierge::audit::Auditor;
use concierge::clock::{Clock, ManualClock};
use concierge::config::DatabaseUrl;
use concierge::config::http::TrustAnchors;
use concierge::config::mfa::{HttpGrant, Origin, PluginSecret, SecretSlot};
use concierge::domain::SecretString;
use concierge::mfa::host::{HttpSender, http};
use concierge::mfa::outbound::PluginHttp;
use concierge::storage::{DieselStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\naccept";

/// A loopback HTTP/1.1 server that answers every request at once (keep-alive).
async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut have = 0;
            loop {
                let Ok(n) = sock.read(&mut buf[have..]).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                have += n;
                // One request: its head, and a body of content-length bytes.
                while let Some(end) = find(&buf[..have], b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let total = end + 4 + len;
                    if have < total {
                        break;
                    }
                    if sock.write_all(RESPONSE).await.is_err() {
                        return;
                    }
                    buf.copy_within(total..have, 0);
                    have -= total;
                }
            }
        });
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn row(name: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let total: Duration = times.iter().sum();
    let p50 = percentile(&times, 0.5);
    let p99 = percentile(&times, 0.99);
    let per_s = times.len() as f64 / total.as_secs_f64();
    println!(
        "| {name} | {:.1} | {:.1} | {per_s:.0} |",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    p50
}

fn main() {
    let iters: usize = std::env::var("CONCIERGE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(serve(listener));
    let origin_text = format!("http://127.0.0.1:{port}");
    let url = format!("{origin_text}/validate/check");
    let origin = Origin::parse(&origin_text).unwrap();

    // 1. The floor: a raw keep-alive exchange.
    eprintln!("timing {iters} raw tcp exchanges");
    let mut raw = Vec::with_capacity(iters);
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_nodelay(true).unwrap();
    let request = format!(
        "POST /validate/check HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: pi-secret\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: 24\r\n\r\nuser=alice&pass=12345678"
    );
    let mut buf = vec![0u8; RESPONSE.len()];
    for _ in 0..iters {
        let t = Instant::now();
        sock.write_all(request.as_bytes()).unwrap();
        sock.read_exact(&mut buf).unwrap();
        raw.push(t.elapsed());
    }

    // 2. reqwest alone, driven as the host drives it (spawned on the runtime, awaited from here).
    eprintln!("timing {iters} plain reqwest requests");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let handle = rt.handle().clone();
    let mut plain = Vec::with_capacity(iters);
    for _ in 0..iters {
        let (client, url) = (client.clone(), url.clone());
        let t = Instant::now();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let res = client
                .post(url)
                .header("authorization", "pi-secret")
                .body("user=alice&pass=12345678")
                .send()
                .await
                .unwrap();
            let body = res.bytes().await.unwrap();
            let _ = tx.send(body.len());
        });
        assert_eq!(rx.recv().unwrap(), 6);
        plain.push(t.elapsed());
    }

    // 3. The plugin's capability, as a call makes it.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        DieselStore::open(
            &DatabaseUrl::Sqlite(dir.path().join("b.db")),
            2,
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000));
    let audit = Auditor::new(Arc::clone(&store), clock).unwrap();
    let grant = HttpGrant {
        origins: BTreeSet::from([origin.clone()]),
        secrets: vec![PluginSecret {
            name: "pi".into(),
            value: SecretString::new("pi-secret-value-7f3a".into()),
            origins: BTreeSet::from([origin]),
            slot: SecretSlot::Header("authorization".into()),
        }],
    };
    let sender = PluginHttp::new("bench", grant, &TrustAnchors::default()).unwrap();
    eprintln!("timing {iters} plugin http calls");
    let mut capability = Vec::with_capacity(iters);
    for _ in 0..iters {
        let request = http::Request {
            method: "POST".into(),
            url: url.clone(),
            headers: vec![("authorization".into(), http::SecretRef::Secret("pi".into()))],
            body: http::Body::Form(vec![
                ("user".into(), http::SecretRef::Literal("alice".into())),
                ("pass".into(), http::SecretRef::Literal("12345678".into())),
            ]),
        };
        let t = Instant::now();
        let response = sender
            .send(
                request,
                Instant::now() + Duration::from_secs(2),
                Some(&audit),
                "u1",
            )
            .unwrap();
        capability.push(t.elapsed());
        assert_eq!(response.status, 200);
    }

    println!("| one outbound call ({iters} each) | p50 µs | p99 µs | calls/s |");
    println!("|---|---|---|---|");
    let floor = row("raw tcp exchange (floor)", raw);
    let lib = row("reqwest alone", plain);
    let ours = row("plugin http (checks, secret, redaction, audit)", capability);
    println!(
        "\nhost overhead at p50: {:.1} µs over reqwest, {:.1} µs over the raw exchange",
        (ours.as_secs_f64() - lib.as_secs_f64()) * 1e6,
        (ours.as_secs_f64() - floor.as_secs_f64()) * 1e6
    );
}
