//! The machine's own limits, measured first: fdatasync rate, the latency of a small durable
//! overwrite with one and two in flight, sequential write bandwidth, how long waking a
//! sleeping thread takes (every group commit hands work between threads), and how an idle
//! CPU waits (which decides how long such a wake-up takes on a virtual machine).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// What the disk can do.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) fdatasync_per_s: f64,
    /// Mean latency of a 16 KiB overwrite + fdatasync of already written blocks (what a
    /// small group commit costs), with one and with two in flight on one file.
    pub(crate) overwrite_sync_us: [f64; 2],
    /// Sequential write bandwidth in MiB/s (256 MiB, then one fdatasync): into a new file,
    /// where the file system allocates blocks (and a thin-provisioned virtual disk, whose
    /// blocks a `discard` mount gives back as files are deleted, may allocate too), and
    /// over the same blocks again: the disk's own bandwidth.
    pub(crate) seq_write_mib_s: f64,
    pub(crate) seq_overwrite_mib_s: f64,
    /// Mean microseconds from unparking a sleeping thread until it runs (half a ping-pong).
    pub(crate) wake_up_us: f64,
    /// The CPUs, and the workers of the runtime the in-process appenders run on (`annals`
    /// leaves one CPU to the engine's threads).
    pub(crate) cpus: usize,
    pub(crate) runtime_workers: usize,
    pub(crate) idle: IdlePolling,
}

/// How an idle CPU waits for work: the kernel's cpuidle driver and, for a KVM guest's
/// `haltpoll` driver, how long it polls before it halts. A halted virtual CPU takes tens of
/// µs to wake (an interrupt through the hypervisor); W1's group commit wakes an idle thread
/// two or three times per group, so this setting moves W1 more than the disk does (README,
/// Performance).
#[derive(Debug, Clone, Default)]
pub(crate) struct IdlePolling {
    /// `/sys/devices/system/cpu/cpuidle/current_driver`, where the kernel has one.
    pub(crate) driver: Option<String>,
    /// `/sys/module/haltpoll/parameters/guest_halt_poll_ns` under the `haltpoll` driver.
    pub(crate) halt_poll_ns: Option<u64>,
}

impl IdlePolling {
    fn read() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_owned())
        };
        let driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
        let halt_poll_ns = driver
            .as_deref()
            .filter(|d| *d == "haltpoll")
            .and_then(|_| read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"))
            .and_then(|ns| ns.parse().ok());
        Self {
            driver,
            halt_poll_ns,
        }
    }

    /// `cpuidle haltpoll, polls 0 µs before halting`.
    pub(crate) fn describe(&self) -> String {
        match (&self.driver, self.halt_poll_ns) {
            (None, _) => "cpuidle: none reported".to_owned(),
            (Some(driver), Some(ns)) => {
                format!("cpuidle {driver}, polls {} µs before halting", ns / 1000)
            }
            (Some(driver), None) => format!("cpuidle {driver}"),
        }
    }

    /// Advice for a KVM guest whose idle CPUs halt without polling, where every wake-up of
    /// an idle thread goes through the hypervisor; `None` elsewhere.
    pub(crate) fn hint(&self) -> Option<&'static str> {
        let halts_at_once =
            self.driver.as_deref() == Some("haltpoll") && self.halt_poll_ns == Some(0);
        halts_at_once.then_some(
            "idle CPUs halt without polling (guest_halt_poll_ns = 0), so a group commit's \
             thread wake-ups go through the hypervisor; with 200000, the driver's default, \
             W1 at 64 writers ran 2-37% faster (median 19%, 7 alternating pairs) on such VMs \
             (README, Performance)",
        )
    }
}

/// Writes every dirty page of the machine to disk, so that the next measurement does not
/// pay for the previous one's write-back (the page cache can hold gigabytes after a run).
pub(crate) fn settle_disk() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .map_err(|e| anyhow::anyhow!("running sync to settle the disk: {e}"))?;
    anyhow::ensure!(
        status.success(),
        "sync (settling the disk) failed: {status}"
    );
    Ok(())
}

pub(crate) fn measure(dir: &Path) -> anyhow::Result<Machine> {
    let path = dir.join("machine-probe");
    let file = std::fs::File::create(&path)?;
    let block = vec![7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < 2.0 {
        file.write_all_at(&block, n * 4096)?;
        file.sync_data()?;
        n += 1;
    }
    let fdatasync_per_s = n as f64 / started.elapsed().as_secs_f64();
    let overwrite_sync_us = [
        overwrite_sync_latency(&file, 1)?,
        overwrite_sync_latency(&file, 2)?,
    ];
    drop(file);
    std::fs::remove_file(&path)?;
    let path = dir.join("machine-probe-sequential");
    let file = std::fs::File::create(&path)?;
    let seq_write_mib_s = sequential_write(&file)?;
    let seq_overwrite_mib_s = sequential_write(&file)?;
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Machine {
        fdatasync_per_s,
        overwrite_sync_us,
        seq_write_mib_s,
        seq_overwrite_mib_s,
        wake_up_us: wake_up_latency(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        runtime_workers: tokio::runtime::Handle::try_current()
            .map_or(0, |h| h.metrics().num_workers()),
        idle: IdlePolling::read(),
    })
}

/// MiB/s of writing 256 MiB from the start of `file` in 1 MiB writes, then one fdatasync.
fn sequential_write(file: &std::fs::File) -> std::io::Result<f64> {
    let chunk = vec![9u8; 1 << 20];
    let total_mib = 256u64;
    let started = Instant::now();
    for i in 0..total_mib {
        file.write_all_at(&chunk, i << 20)?;
    }
    file.sync_data()?;
    Ok(total_mib as f64 / started.elapsed().as_secs_f64())
}

/// Half the mean round trip of two threads that take turns waking each other, each parking
/// until woken (for 0.3 s).
fn wake_up_latency() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let turn = AtomicU64::new(0);
    let main = std::thread::current();
    let rounds = std::thread::scope(|scope| {
        let turn = &turn;
        let partner = scope.spawn(move || {
            let mut seen = 0;
            loop {
                while turn.load(Ordering::Acquire) == seen {
                    std::thread::park();
                }
                seen = turn.load(Ordering::Acquire);
                if seen == u64::MAX {
                    return;
                }
                seen += 1;
                turn.store(seen, Ordering::Release);
                main.unpark();
            }
        });
        let started = Instant::now();
        let mut rounds = 0u64;
        while started.elapsed().as_secs_f64() < 0.3 {
            let mine = turn.load(Ordering::Acquire) + 1;
            turn.store(mine, Ordering::Release);
            partner.thread().unpark();
            while turn.load(Ordering::Acquire) == mine {
                std::thread::park();
            }
            rounds += 1;
        }
        turn.store(u64::MAX, Ordering::Release);
        partner.thread().unpark();
        (rounds, started.elapsed().as_secs_f64())
    });
    rounds.1 * 1e6 / rounds.0.max(1) as f64 / 2.0
}

/// Mean microseconds per 16 KiB overwrite + fdatasync, `in_flight` threads at once for a
/// second, each within its own 4 MiB of `file` (written and synced once first).
fn overwrite_sync_latency(file: &std::fs::File, in_flight: u64) -> anyhow::Result<f64> {
    const REGION: u64 = 4 << 20;
    const WRITE: usize = 16 << 10;
    let zeros = vec![0u8; 1 << 20];
    for i in 0..(REGION * in_flight) >> 20 {
        file.write_all_at(&zeros, i << 20)?;
    }
    file.sync_data()?;
    let per_thread = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..in_flight)
            .map(|t| {
                scope.spawn(move || -> std::io::Result<(u64, f64)> {
                    let block = vec![5u8; WRITE];
                    let started = Instant::now();
                    let mut n = 0u64;
                    while started.elapsed().as_secs_f64() < 1.0 {
                        let offset = t * REGION + (n * WRITE as u64) % REGION;
                        file.write_all_at(&block, offset)?;
                        file.sync_data()?;
                        n += 1;
                    }
                    Ok((n, started.elapsed().as_secs_f64()))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("probe thread")))
            })
            .collect::<std::io::Result<Vec<_>>>()
    })?;
    let syncs: u64 = per_thread.iter().map(|(n, _)| n).sum();
    let busy: f64 = per_thread.iter().map(|(_, s)| s).sum();
    Ok(busy * 1e6 / syncs.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(driver: Option<&str>, halt_poll_ns: Option<u64>) -> IdlePolling {
        IdlePolling {
            driver: driver.map(str::to_owned),
            halt_poll_ns,
        }
    }

    #[test]
    fn only_a_guest_that_halts_without_polling_is_advised() {
        let hint = idle(Some("haltpoll"), Some(0)).hint();
        assert!(hint.is_some_and(|h| h.contains("guest_halt_poll_ns = 0")));
        assert_eq!(idle(Some("haltpoll"), Some(200_000)).hint(), None);
        assert_eq!(idle(Some("haltpoll"), None).hint(), None);
        assert_eq!(idle(Some("intel_idle"), None).hint(), None);
        assert_eq!(idle(None, None).hint(), None);
    }
}
