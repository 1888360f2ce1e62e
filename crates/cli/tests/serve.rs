//! `annals serve` as a process: starts on a free port, answers the CLI's `--server` mode
//! (append, read, tail), stops cleanly on SIGTERM, and what it acknowledged is on disk (or,
//! with `--backend postgres`, in PostgreSQL).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn annals() -> Command {
    Command::new(env!("CARGO_BIN_EXE_annals"))
}

/// Starts the server on the embedded engine and returns it with the address it printed.
fn start(data: &std::path::Path) -> (Child, String) {
    let data = data.to_str().expect("utf-8 path");
    start_with(&["--data", data])
}

/// Starts the server with extra arguments.
fn start_with(extra: &[&str]) -> (Child, String) {
    let mut child = annals()
        .args(["serve", "--insecure", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("ANNALS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("annals serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let addr = loop {
        assert!(Instant::now() < deadline, "no listening line: {seen:?}");
        let line = lines.next().expect("server output").expect("utf-8");
        if let Some(rest) = line.strip_prefix("annals serve: listening on ") {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
        seen.push(line);
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, addr)
}

/// Stops the server with SIGTERM and checks it exits with status 0.
fn stop(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "server did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = annals().args(args).output().expect("annals runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_answers_the_cli_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, addr) = start(dir.path());
    let server = format!("http://{addr}");

    let (ok, out, err) = run(&[
        "append",
        "order-1",
        "--type",
        "Placed",
        "--data",
        r#"{"total": 3}"#,
        "--expected-revision",
        "no-stream",
        "--server",
        &server,
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("to order-1 at revision 0, position 0"),
        "{out}"
    );

    let (ok, _, err) = run(&[
        "append",
        "order-1",
        "--type",
        "Late",
        "--data",
        "{}",
        "--expected-revision",
        "no-stream",
        "--server",
        &server,
    ]);
    assert!(!ok, "a conflicting append fails");
    assert!(err.contains("409"), "{err}");

    let (ok, out, err) = run(&["read", "order-1", "--json", "--server", &server]);
    assert!(ok, "{err}");
    let event: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON event");
    assert_eq!(event["type"], "Placed");
    assert_eq!(event["data"]["total"], 3);

    let (ok, out, err) = run(&[
        "tail",
        "$all",
        "--from-start",
        "--count",
        "1",
        "--server",
        &server,
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("order-1@0 #0 Placed"), "{out}");

    // SIGTERM: a graceful stop with exit code 0.
    stop(&mut child);

    // The acknowledged append is durable: read it back from the data directory.
    let data = dir.path().to_str().expect("utf-8 path");
    let (ok, out, err) = run(&["read", "order-1", "--data", data]);
    assert!(ok, "{err}");
    assert!(out.contains("Placed"), "{out}");
}

#[test]
fn serve_refuses_to_start_without_insecure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let (ok, _, err) = run(&["serve", "--listen", "127.0.0.1:0", "--data", data]);
    assert!(!ok);
    assert!(err.contains("--insecure"), "{err}");
}

/// The PostgreSQL the tests use.
fn pg_url() -> String {
    std::env::var("ANNALS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[test]
fn serve_on_postgres_keeps_events_across_restarts() {
    let url = pg_url();
    let schema = format!("annals_cli_{}", uuid::Uuid::new_v4().simple());
    let args = [
        "--backend",
        "postgres",
        "--pg-url",
        &url,
        "--pg-schema",
        &schema,
    ];
    let (mut child, addr) = start_with(&args);
    let server = format!("http://{addr}");
    let append = |expected: &str| {
        run(&[
            "append",
            "order-7",
            "--type",
            "Placed",
            "--data",
            r#"{"total": 7}"#,
            "--expected-revision",
            expected,
            "--server",
            &server,
        ])
    };
    let (ok, out, err) = append("no-stream");
    assert!(ok, "{out}{err}");
    assert!(out.contains("to order-7 at revision 0"), "{out}");
    let (ok, _, err) = append("no-stream");
    assert!(
        !ok && err.contains("409"),
        "a conflicting append fails: {err}"
    );
    stop(&mut child);

    // A new server on the same schema serves what the first acknowledged.
    let (mut child, addr) = start_with(&args);
    let server = format!("http://{addr}");
    let (ok, out, err) = run(&["read", "order-7", "--json", "--server", &server]);
    assert!(ok, "{err}");
    let event: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON event");
    assert_eq!(event["type"], "Placed");
    assert_eq!(event["data"]["total"], 7);
    stop(&mut child);

    let dropped = Command::new("psql")
        .args([
            url.as_str(),
            "-qc",
            &format!("DROP SCHEMA {schema} CASCADE"),
        ])
        .status()
        .expect("psql runs");
    assert!(dropped.success(), "the test schema is dropped");
}
