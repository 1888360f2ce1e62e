//! Printing and collecting the measured lines.

use std::path::Path;

use serde_json::{Value, json};

use super::machine::Machine;
use super::workloads::Stages;

/// One measured line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Line {
    pub(crate) workload: &'static str,
    pub(crate) variant: String,
    pub(crate) system: &'static str,
    pub(crate) events_per_s: Option<f64>,
    pub(crate) mib_per_s: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) p999_ms: Option<f64>,
    pub(crate) seconds: Option<f64>,
    pub(crate) ratio_vs_postgres: Option<f64>,
    pub(crate) extra: Option<String>,
    pub(crate) stages: Option<Stages>,
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    lines: Vec<Value>,
}

fn fmt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(String::new, |v| {
        if v >= 100.0 {
            format!("{v:>12.0} {unit}")
        } else {
            format!("{v:>12.2} {unit}")
        }
    })
}

impl Report {
    pub(crate) fn machine(&mut self, m: &Machine) {
        println!(
            "machine  fdatasync {:.0}/s   16 KiB overwrite + fdatasync {:.0} µs (2 in flight: \
             {:.0} µs each)   sequential write {:.0} MiB/s (new file; {:.0} overwriting)   \
             thread wake-up {:.1} µs   runtime: {} tokio worker(s) on {} CPUs   idle: {}",
            m.fdatasync_per_s,
            m.overwrite_sync_us[0],
            m.overwrite_sync_us[1],
            m.seq_write_mib_s,
            m.seq_overwrite_mib_s,
            m.wake_up_us,
            m.runtime_workers,
            m.cpus,
            m.idle.describe(),
        );
        if let Some(hint) = m.idle.hint() {
            println!("note     {hint}");
        }
        self.lines.push(json!({
            "workload": "machine", "variant": null, "system": "machine",
            "fdatasync_per_s": m.fdatasync_per_s, "seq_write_mib_s": m.seq_write_mib_s,
            "seq_overwrite_mib_s": m.seq_overwrite_mib_s,
            "overwrite_sync_us": m.overwrite_sync_us[0],
            "overwrite_sync_us_2_in_flight": m.overwrite_sync_us[1],
            "wake_up_us": m.wake_up_us,
            "cpus": m.cpus, "runtime_workers": m.runtime_workers,
            "cpuidle_driver": m.idle.driver, "guest_halt_poll_ns": m.idle.halt_poll_ns,
            "events_per_s": null, "p50_ms": null, "p99_ms": null, "ratio_vs_postgres": null,
        }));
    }

    /// Prints a line and keeps it for `--json`; a baseline line without a figure (no
    /// baseline files, or PostgreSQL failed and said why on stderr) is left out.
    pub(crate) fn line(&mut self, line: Line) {
        if line.system == "postgres" && line.events_per_s.is_none() {
            return;
        }
        println!(
            "{:<3} {:<26} {:<8} {}{}{}{}{}{}{}{}",
            line.workload,
            line.variant,
            line.system,
            fmt(line.events_per_s, "ev/s"),
            line.mib_per_s
                .map_or(String::new(), |m| format!("  {m:.0} MiB/s")),
            line.p50_ms
                .map_or(String::new(), |v| format!("  p50 {v:.2} ms")),
            line.p99_ms
                .map_or(String::new(), |v| format!("  p99 {v:.2} ms")),
            line.p999_ms
                .map_or(String::new(), |v| format!("  p99.9 {v:.2} ms")),
            line.seconds
                .map_or(String::new(), |v| format!("  {v:.2} s")),
            line.ratio_vs_postgres
                .map_or(String::new(), |r| format!("  = {r:.1}x PostgreSQL")),
            line.extra
                .as_deref()
                .map_or(String::new(), |e| format!("  ({e})")),
        );
        self.lines.push(json!({
            "workload": line.workload,
            "variant": line.variant,
            "system": line.system,
            "events_per_s": line.events_per_s,
            "mib_per_s": line.mib_per_s,
            "p50_ms": line.p50_ms,
            "p99_ms": line.p99_ms,
            "p999_ms": line.p999_ms,
            "seconds": line.seconds,
            "ratio_vs_postgres": line.ratio_vs_postgres,
            "note": line.extra,
            "stages_us": line.stages.map(|s| json!({
                "queued": s.queued_us, "building": s.building_us, "syncing": s.syncing_us,
                "answering": s.answering_us, "caller": s.caller_us,
            })),
        }));
    }

    /// Prints how long the run took, in all and part by part, and keeps it as the JSON's
    /// last entry (`"workload": "run"`), so that a report shows whether `--quick` kept to its
    /// three minutes.
    pub(crate) fn run_time(&mut self, total: f64, parts: &[(&str, f64)]) {
        let each: Vec<String> = parts
            .iter()
            .map(|(name, seconds)| format!("{name} {}", duration(*seconds)))
            .collect();
        println!("bench took {} ({})", duration(total), each.join(", "));
        let parts: serde_json::Map<String, Value> = parts
            .iter()
            .map(|(name, seconds)| ((*name).to_owned(), json!(seconds)))
            .collect();
        self.lines.push(json!({
            "workload": "run", "variant": null, "system": "machine",
            "seconds": total, "seconds_by_part": parts,
            "events_per_s": null, "p50_ms": null, "p99_ms": null, "ratio_vs_postgres": null,
        }));
    }

    pub(crate) fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(&self.lines)?)?;
        Ok(())
    }
}

/// A duration for people: "48.2 s", or "2 min 42 s" from a minute on.
pub(crate) fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        let whole = seconds.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// The median of some measurements: the middle one, or the mean of the middle two when
/// their number is even (the upper one alone would be the best of two passes); 0 for none.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let half = values.len() / 2;
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[half],
        _ => (values[half - 1] + values[half]) / 2.0,
    }
}

/// A percentile of latencies in microseconds, as milliseconds.
pub(crate) fn percentile_ms(sorted_micros: &[u64], p: f64) -> Option<f64> {
    if sorted_micros.is_empty() {
        return None;
    }
    let index = ((sorted_micros.len() - 1) as f64 * p).round() as usize;
    Some(sorted_micros[index] as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![7.0]), 7.0);
        assert_eq!(median(vec![9.0, 1.0, 4.0]), 4.0);
        assert_eq!(median(vec![3.0, 1.0]), 2.0);
        assert_eq!(median(vec![10.0, 1.0, 4.0, 2.0]), 3.0);
    }

    #[test]
    fn durations_read_as_seconds_then_minutes() {
        assert_eq!(duration(0.04), "0.0 s");
        assert_eq!(duration(48.25), "48.2 s");
        assert_eq!(duration(59.96), "60.0 s");
        assert_eq!(duration(162.4), "2 min 42 s");
        assert_eq!(duration(600.0), "10 min 0 s");
    }

    #[test]
    fn percentiles_pick_the_nearest_rank_in_milliseconds() {
        assert_eq!(percentile_ms(&[], 0.5), None);
        let micros: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile_ms(&micros, 0.5), Some(0.501));
        assert_eq!(percentile_ms(&micros, 0.99), Some(0.990));
        assert_eq!(percentile_ms(&micros, 1.0), Some(1.0));
    }
}
