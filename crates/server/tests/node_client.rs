//! The official KurrentDB Node.js client (`@kurrent/kurrentdb-client` from npm) against
//! `annals-server`: `tests/node/check.mjs` appends, reads and subscribes.
//!
//! Needs `node` and `npm`. Without them the test is skipped locally and fails when `CI=true`.
//! `npm ci` runs here when `tests/node/node_modules` is missing (the lock file is committed).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

async fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn node_client_appends_reads_and_subscribes() {
    for program in ["node", "npm"] {
        if !available(program).await {
            assert!(
                !in_ci(),
                "{program} is required in CI (CI=true) but was not found"
            );
            eprintln!(
                "SKIPPED: {program} not found; install Node.js 20+ to run the Node client check"
            );
            return;
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !dir.join("node_modules/@kurrent/kurrentdb-client").exists() {
        let status = tokio::time::timeout(
            Duration::from_secs(300),
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status(),
        )
        .await
        .expect("npm ci finishes within 5 minutes")
        .expect("npm runs");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }

    let server = common::start().await;
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("node")
            .arg("check.mjs")
            .env("ANNALS_ADDR", server.addr.to_string())
            .current_dir(&dir)
            .output(),
    )
    .await
    .expect("the Node check finishes within 2 minutes")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Node client check failed:\n{stdout}\n{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("no JSON summary ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["read"], 3);
    assert_eq!(summary["subscribed"], 4);
    assert_eq!(summary["all"], 4);
    server.stop().await;
}
