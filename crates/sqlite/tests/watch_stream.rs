//! `HttpTransport::watch` and the SSE reader over real HTTP: a tokio `TcpListener` on
//! 127.0.0.1 answers `GET /sync/watch` with scripted bytes (written in odd pieces, with
//! pauses), so the stream, its headers and its framing go through reqwest and hyper exactly
//! as against a server.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oversync_sqlite::watch::{WatchEvents, WatchStreamError};
use oversync_sqlite::{HttpOptions, HttpTransport, StaticToken, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One scripted answer: the pieces written after the head, each after `pause`.
struct Answer {
    status: &'static str,
    body: Vec<&'static [u8]>,
    pause: Duration,
}

/// Serves one connection per answer; returns its base URL and the request heads it read.
async fn serve(answers: Vec<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let json = answer.status != "200 OK";
            let content_type = if json {
                "application/json"
            } else {
                "text/event-stream"
            };
            let mut out = format!(
                "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
                answer.status
            )
            .into_bytes();
            if json {
                out.extend(answer.body.concat());
            }
            socket.write_all(&out).await.unwrap();
            if !json {
                for piece in &answer.body {
                    tokio::time::sleep(answer.pause).await;
                    if socket.write_all(piece).await.is_err() {
                        break;
                    }
                }
            }
            let _ = socket.shutdown().await;
        }
    });
    (base, heads)
}

fn transport(base: &str, options: &HttpOptions) -> HttpTransport {
    HttpTransport::new(base, Arc::new(StaticToken("tok-w".to_owned())), options).unwrap()
}

#[tokio::test]
async fn watch_stream_over_http_yields_bundle_events_then_a_clean_eof() {
    let (base, _) = serve(vec![Answer {
        status: "200 OK",
        body: vec![
            b": heartbeat\n\n",
            b"event: bun",
            b"dle\r\ndata: {\"bundle_seq\":12,\"source_id\":\"dev-a\",\"source_bundle_id\":3}\r\n",
            b"\r\nevent: bundle\ndata: {\"bundle_seq\":13}\n\n",
        ],
        pause: Duration::from_millis(5),
    }])
    .await;
    let body = transport(&base, &HttpOptions::default())
        .watch("src-1", 11)
        .await
        .unwrap();
    let mut events = WatchEvents::new(body);
    let first = events.next().await.unwrap();
    assert_eq!(
        (
            first.bundle_seq,
            first.source_id.as_str(),
            first.source_bundle_id
        ),
        (12, "dev-a", 3)
    );
    assert_eq!(events.next().await.unwrap().bundle_seq, 13);
    assert!(matches!(events.next().await, Err(WatchStreamError::Eof)));
}

#[tokio::test]
async fn watch_request_carries_after_bundle_seq_token_and_source_id() {
    let (base, heads) = serve(vec![Answer {
        status: "200 OK",
        body: vec![],
        pause: Duration::ZERO,
    }])
    .await;
    let body = transport(&base, &HttpOptions::default())
        .watch(" src-7 ", 42)
        .await
        .unwrap();
    drop(body);
    let head = heads.lock().unwrap()[0].to_lowercase();
    assert!(
        head.starts_with("get /sync/watch?after_bundle_seq=42 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("authorization: bearer tok-w\r\n"), "{head}");
    assert!(head.contains("oversync-source-id: src-7\r\n"), "{head}");
    assert!(!head.contains("content-type"), "{head}");
}

#[tokio::test]
async fn watch_refusal_is_a_status_error_with_the_servers_code() {
    let (base, _) = serve(vec![Answer {
        status: "403 Forbidden",
        body: vec![
            br#"{"error":"bundle_change_watch_forbidden","message":"Bundle change watch is not enabled for this client"}"#,
        ],
        pause: Duration::ZERO,
    }])
    .await;
    let err = transport(&base, &HttpOptions::default())
        .watch("src-1", 0)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.code(), Some("bundle_change_watch_forbidden"));
}

#[tokio::test]
async fn watch_stream_outlives_the_request_timeout_of_ordinary_calls() {
    // §12 C5: the reference's 120 s client timeout cut every stream; here the ordinary
    // timeout is 150 ms and the event arrives after 400 ms of heartbeats.
    let (base, _) = serve(vec![Answer {
        status: "200 OK",
        body: vec![
            b": heartbeat\n\n",
            b": heartbeat\n\n",
            b": heartbeat\n\n",
            b": heartbeat\n\n",
            b"event: bundle\ndata: {\"bundle_seq\":5}\n\n",
        ],
        pause: Duration::from_millis(100),
    }])
    .await;
    let options = HttpOptions {
        timeout: Duration::from_millis(150),
        ..HttpOptions::default()
    };
    let body = transport(&base, &options).watch("src-1", 0).await.unwrap();
    let mut events = WatchEvents::new(body);
    assert_eq!(events.next().await.unwrap().bundle_seq, 5);
}

#[tokio::test]
async fn a_silent_watch_stream_is_broken_by_the_idle_timeout() {
    let (base, _) = serve(vec![Answer {
        status: "200 OK",
        body: vec![b": heartbeat\n\n"],
        pause: Duration::from_secs(5),
    }])
    .await;
    let options = HttpOptions {
        watch_idle_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    };
    let body = transport(&base, &options).watch("src-1", 0).await.unwrap();
    let mut events = WatchEvents::new(body);
    let started = std::time::Instant::now();
    let err = events.next().await.unwrap_err();
    assert!(matches!(err, WatchStreamError::Transport(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}
