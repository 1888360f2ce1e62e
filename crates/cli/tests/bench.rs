//! `annals bench` end to end, shortened: every workload runs, the JSON report has one
//! object per measured line with the keys the issue names, the machine entry comes first,
//! the Annals append lines carry the PostgreSQL ratio and the time breakdown, and W1 at 64
//! writers has the machine's bare group-commit ceiling beside it; the last entry says how
//! long the run took.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `shared/baselines` beside the checkout, when it is there (it is not in a clone made
/// elsewhere; the bench then reports Annals without ratios).
fn baselines() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    root.ancestors()
        .map(|a| a.join("shared").join("baselines"))
        .find(|b| b.join("pg_event_store_schema.sql").is_file())
}

fn pg_reachable() -> bool {
    Command::new("psql")
        .args(["-X", "-q", "-c", "select 1"])
        .arg(
            std::env::var("ANNALS_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        )
        .output()
        .is_ok_and(|o| o.status.success())
}

fn number(line: &Value, key: &str) -> Option<f64> {
    line.get(key).and_then(Value::as_f64)
}

#[test]
fn a_short_run_reports_every_workload_with_its_baseline() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let with_baseline = baselines().is_some() && pg_reachable();
    if ci && baselines().is_some() {
        assert!(
            with_baseline,
            "PostgreSQL is required in CI but unreachable"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("out.json");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_annals"));
    bench
        .args(["bench", "--workloads", "W1,W2,W3,W4,W5,W8"])
        .args(["--seconds", "0.3", "--repeats", "1", "--events", "20000"])
        .arg("--ceiling-variants")
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json);
    if let Some(baselines) = baselines() {
        bench.arg("--baselines").arg(baselines);
    }
    let out = bench.output().expect("annals bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");

    let lines: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    for line in &lines {
        for key in [
            "workload",
            "variant",
            "system",
            "events_per_s",
            "p50_ms",
            "p99_ms",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert!(
            line.get("ratio_vs_postgres").is_some(),
            "ratio key in {line}"
        );
    }
    let machine = &lines[0];
    assert_eq!(machine["system"], "machine");
    for key in [
        "fdatasync_per_s",
        "seq_write_mib_s",
        "seq_overwrite_mib_s",
        "overwrite_sync_us",
        "overwrite_sync_us_2_in_flight",
        "wake_up_us",
        "cpus",
        "runtime_workers",
    ] {
        assert!(
            number(machine, key).is_some_and(|v| v > 0.0),
            "{key} in {machine}"
        );
    }
    // How an idle CPU waits, as the kernel reports it (null where it reports nothing).
    let driver = std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver")
        .ok()
        .map(|d| d.trim().to_owned());
    assert_eq!(
        machine["cpuidle_driver"].as_str(),
        driver.as_deref(),
        "{machine}"
    );
    let halt_poll = std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        .ok()
        .filter(|_| driver.as_deref() == Some("haltpoll"))
        .and_then(|ns| ns.trim().parse::<f64>().ok());
    assert_eq!(
        number(machine, "guest_halt_poll_ns"),
        halt_poll,
        "{machine}"
    );
    // A guest whose idle CPUs halt at once is told what that costs and where to read more.
    assert_eq!(
        stdout.contains("note     idle CPUs halt without polling"),
        halt_poll == Some(0.0),
        "{stdout}"
    );
    // `annals` leaves one CPU to the engine's threads.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cpus = number(machine, "cpus").unwrap_or(0.0);
        let expected = (cpus - 1.0).max(1.0);
        assert_eq!(
            number(machine, "runtime_workers"),
            Some(expected),
            "{machine}"
        );
    }

    let annals = |workload: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["workload"] == workload && l["system"] == "annals")
            .collect()
    };
    let w1 = annals("W1");
    let variants: Vec<&str> = w1.iter().filter_map(|l| l["variant"].as_str()).collect();
    assert_eq!(variants, ["1 writers", "16 writers", "64 writers"]);
    for line in w1.iter().chain(&annals("W3")) {
        assert!(
            number(line, "events_per_s").is_some_and(|v| v > 0.0),
            "{line}"
        );
        assert!(number(line, "p99_ms").is_some_and(|v| v > 0.0), "{line}");
        let stages = &line["stages_us"];
        for stage in ["queued", "building", "syncing", "answering", "caller"] {
            assert!(number(stages, stage).is_some(), "{stage} in {line}");
        }
        // Every append waits for its own fdatasync.
        assert!(number(stages, "syncing").is_some_and(|v| v > 0.0), "{line}");
        // The log's rate in bytes: each event's 256 + 64 bytes of payload and its framing.
        let log_bytes_per_event = number(line, "mib_per_s").unwrap_or(0.0) * (1 << 20) as f64
            / number(line, "events_per_s").unwrap_or(f64::INFINITY);
        assert!(
            (320.0..1024.0).contains(&log_bytes_per_event),
            "{log_bytes_per_event} log bytes per event in {line}"
        );
        assert!(
            line["note"]
                .as_str()
                .is_some_and(|n| n.contains("% of the disk's sequential write bandwidth")),
            "{line}"
        );
        if with_baseline {
            assert!(number(line, "ratio_vs_postgres").is_some(), "{line}");
        }
    }
    // The machine's bare group-commit ceiling beside the target line, its variants, and
    // Annals' share of it.
    let ceiling: Vec<&Value> = lines
        .iter()
        .filter(|l| l["workload"] == "W1" && l["system"] == "machine")
        .collect();
    let names: Vec<&str> = ceiling
        .iter()
        .filter_map(|l| l["variant"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "64 writers, bare group commit",
            "64 writers, bare group commit, zero-filling new space",
            "64 writers, bare group commit, zero-filling new space, 2.0 µs leader CPU per event",
            "64 writers, bare group commit, zero-filling new space, 1.0 µs leader CPU per \
             event, 1.0 µs appender CPU per event",
            "64 writers, bare group commit, zero-filling new space, 2.0 µs appender CPU per \
             event",
        ]
    );
    // Each variant's line lists its runs (one here, with `--repeats 1`).
    for line in &ceiling[2..] {
        let note = line["note"].as_str().unwrap_or_default();
        let runs = note.strip_prefix("runs in order: ").unwrap_or_default();
        assert_eq!(runs.split(" / ").count(), 1, "{line}");
        assert!(runs.parse::<f64>().is_ok_and(|r| r > 0.0), "{line}");
    }
    for line in &ceiling {
        assert!(
            number(line, "events_per_s").is_some_and(|v| v > 0.0),
            "{line}"
        );
    }
    // The two ceilings' own lines (overwriting, and a growing log's) say where their
    // appends' time went, stage by stage as the engine's lines do, and which configuration
    // they ran with: the best overwriting, for both.
    for (line, chosen) in ceiling[..2]
        .iter()
        .zip(["best with", "run as the overwriting ceiling's best, with"])
    {
        let bare = &line["stages_us"];
        for stage in ["queued", "building", "syncing", "answering", "caller"] {
            assert!(number(bare, stage).is_some(), "{stage} in {line}");
        }
        assert!(number(bare, "syncing").is_some_and(|v| v > 0.0), "{line}");
        assert!(
            line["note"]
                .as_str()
                .is_some_and(|n| n.contains(chosen) && n.contains("per append: queued")),
            "{line}"
        );
    }
    assert!(
        w1[2]["note"].as_str().is_some_and(|n| {
            n.contains("% of the bare group-commit ceiling") && n.contains("% of a growing log's")
        }),
        "{}",
        w1[2]
    );
    // Every W1 line gives each CPU's busy share over the run, one per CPU.
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    for line in &w1 {
        let note = line["note"].as_str().unwrap_or_default();
        let busy = note
            .split_once("CPUs busy ")
            .and_then(|(_, rest)| rest.split_once(" (machine-wide)"))
            .map(|(shares, _)| shares.split(" / ").count());
        assert_eq!(busy, Some(cpus), "{line}");
    }
    let w2 = annals("W2");
    let variants: Vec<&str> = w2.iter().filter_map(|l| l["variant"].as_str()).collect();
    assert_eq!(
        variants,
        [
            "1 gRPC writers",
            "16 gRPC writers",
            "64 gRPC writers",
            "64 gRPC writers, one BatchAppend call"
        ]
    );
    // Each gRPC line also says what saturates it: the engine's syncs and group size, the
    // process's CPU per event (client, server and engine), the runtime threads' share (the
    // client's and server's tasks run there), and the engine's stages.
    for line in &w2 {
        assert!(
            number(line, "events_per_s").is_some_and(|v| v > 0.0),
            "{line}"
        );
        assert!(
            line["note"].as_str().is_some_and(|n| {
                [
                    "fsyncs/s",
                    "events per group commit",
                    "µs per event",
                    "runtime threads (",
                    "CPUs busy ",
                ]
                .iter()
                .all(|part| n.contains(part))
            }),
            "{line}"
        );
        assert!(
            number(&line["stages_us"], "syncing").is_some_and(|v| v > 0.0),
            "{line}"
        );
    }
    assert_eq!(annals("W3").len(), 2);
    if with_baseline {
        // Each append line's baseline, measured in the same run.
        let baseline = |workload: &str| {
            lines
                .iter()
                .filter(|l| l["workload"] == workload && l["system"] == "postgres")
                .filter(|l| number(l, "events_per_s").is_some_and(|v| v > 0.0))
                .count()
        };
        assert_eq!((baseline("W1"), baseline("W3")), (3, 2), "{lines:?}");
    }
    let w4 = annals("W4");
    assert!(number(w4[0], "events_per_s").is_some_and(|v| v > 0.0));
    assert!(number(w4[0], "mib_per_s").is_some_and(|v| v > 0.0));
    if with_baseline {
        assert!(number(w4[0], "ratio_vs_postgres").is_some(), "{}", w4[0]);
    }
    let w5 = annals("W5");
    assert!(number(w5[0], "p99_ms").is_some_and(|v| v > 0.0));
    let w8 = annals("W8");
    assert!(number(w8[0], "seconds").is_some_and(|v| v > 0.0));
    assert!(stdout.contains("per append: queued"), "{stdout}");
    // The last entry: how long the run took, in all and part by part.
    let run = lines.last().expect("lines");
    assert_eq!(
        (&run["workload"], &run["system"]),
        (&"run".into(), &"machine".into())
    );
    let total = number(run, "seconds").unwrap_or(0.0);
    let mut parts = 0.0;
    for part in ["machine", "W1", "W2", "W3", "W4", "W5", "W8"] {
        let seconds = number(&run["seconds_by_part"], part).unwrap_or(0.0);
        assert!(seconds > 0.0, "{part} in {run}");
        parts += seconds;
    }
    assert!(parts <= total && total < parts + 5.0, "{run}");
    assert!(stdout.contains("bench took "), "{stdout}");
}

#[test]
fn without_baseline_files_it_says_so_once_and_measures_annals_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["bench", "--workloads", "W3"])
        .args(["--seconds", "0.2", "--repeats", "1", "--baselines"])
        .arg(dir.path().join("no-such-dir"))
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("annals bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert_eq!(
        stderr.matches("no PostgreSQL baseline files in").count(),
        1,
        "{stderr}"
    );
    assert!(
        !stderr.contains("psql"),
        "nothing was run against PostgreSQL:\n{stderr}"
    );
    let lines: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    let systems: Vec<&str> = lines.iter().filter_map(|l| l["system"].as_str()).collect();
    assert_eq!(
        systems,
        ["machine", "annals", "annals", "machine"],
        "{lines:?}"
    );
    assert_eq!(lines[3]["workload"], "run", "{lines:?}");
    for line in &lines[1..3] {
        assert!(
            number(line, "events_per_s").is_some_and(|v| v > 0.0),
            "{line}"
        );
        assert!(line["ratio_vs_postgres"].is_null(), "{line}");
    }
}

#[test]
fn an_unknown_workload_is_refused_before_anything_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["bench", "--workloads", "W1,W9"])
        .output()
        .expect("annals bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unknown workload \"W9\""), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing measured");
}
