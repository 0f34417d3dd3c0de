//! The example binary as a user runs it: no `DATABASE_URL`, so it must start its own throwaway
//! PostgreSQL, serve, and on SIGTERM stop everything it started.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The data directory the binary logged, if any line names one.
fn data_dir_in(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value["fields"]["data_dir"].as_str().map(str::to_owned)
}

fn postgres_running_in(data_dir: &str) -> bool {
    let output = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|l| l.contains("postgres") && l.contains(data_dir))
}

#[test]
fn binary_without_database_url_serves_health_and_stops_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_oversync-example"))
        .env_remove("DATABASE_URL")
        .env("OVERSYNC_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut data_dir = None;
    let mut ready = false;
    let mut lines = stdout.lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(dir) = data_dir_in(&line) {
            data_dir = Some(dir);
        }
        if line.starts_with("oversync example server ready") {
            ready = true;
            break;
        }
    }
    assert!(ready, "the server did not report readiness");
    let data_dir = data_dir.expect("startup log names the throwaway data directory");
    assert!(postgres_running_in(&data_dir));

    let response = std::net::TcpStream::connect(("127.0.0.1", port))
        .and_then(|mut stream| {
            use std::io::{Read, Write};
            stream
                .write_all(b"GET /syncx/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""app_name":"nethttp-server-example""#));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while postgres_running_in(&data_dir) {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL outlived the example server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "data directory left behind"
    );
}
