//! `annals verify`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

pub(crate) fn run(data: &Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        data.join("log").is_dir(),
        "{} holds no Annals log",
        data.display()
    );
    let started = std::time::Instant::now();
    let report = annals_engine::verify::verify(data, |step| eprintln!("{step}"))
        .with_context(|| format!("cannot verify {}", data.display()))?;
    println!(
        "{} segments, {} records ({} bytes, positions 0..{}), {} index runs, {} index entries checked in {:.1?}",
        report.segments,
        report.records,
        report.record_bytes,
        report.next_position,
        report.runs,
        report.index_entries,
        started.elapsed()
    );
    if let Some((file, offset, reason)) = &report.torn_tail {
        println!(
            "torn tail at {} offset {offset} ({reason}); opening the store cuts it",
            file.display()
        );
    }
    for problem in &report.problems {
        println!("PROBLEM: {problem}");
    }
    if report.is_clean() {
        println!("OK");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s) found", report.problems.len());
        Ok(ExitCode::FAILURE)
    }
}
