//! How the engine's committer threads and the runtime's threads spent an append run:
//! running, or runnable and waiting for a CPU (Linux `/proc/self/task/*/schedstat`). CPU use
//! averaged over a run can be well below the core count while the committers still wait
//! for a CPU after most wake-ups: the appenders they answer wake up all at once on the same
//! cores. That wait is the scheduling cost a group commit pays on a small machine, shown
//! beside the CPU figure. The runtime's threads (tokio's, named `tokio-*`), summed, show
//! when the appenders' side is what saturates: W2's client and server share them. Each
//! CPU's busy share over the run, machine-wide (`/proc/stat`), shows what an average
//! hides: on the 2-vCPU VMs the threads of W1's cycle crowd the CPU that takes the disk's
//! interrupts while the other idles.

use std::collections::HashMap;

/// Cumulative times of one thread, from its `schedstat`.
#[derive(Debug, Clone, Copy)]
struct ThreadTimes {
    running_ns: u64,
    waiting_ns: u64,
    switches: u64,
}

/// What a thread is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The engine's `annals-commit-*`.
    Committer,
    /// The tokio runtime's workers and blocking threads (`tokio-*`).
    Runtime,
    Other,
}

impl Role {
    fn of(comm: &str) -> Self {
        if comm.starts_with("annals-commit") {
            Self::Committer
        } else if comm.starts_with("tokio-") {
            Self::Runtime
        } else {
            Self::Other
        }
    }
}

/// This process's threads' times at one moment, by thread id, with each thread's role.
/// Threads are read whatever their name: one started just before may not have named itself
/// yet.
#[derive(Debug, Clone, Default)]
pub(crate) struct Threads(HashMap<u64, (Role, ThreadTimes)>);

/// A role's threads over a run, as shares of its wall time: per thread for the committers
/// (each leads and syncs in turn), summed for the runtime (its workers share the tasks).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Share {
    threads: usize,
    running: f64,
    waiting: f64,
    switches_per_s: f64,
}

impl Threads {
    /// Reads every thread of this process; empty where there is no `/proc` (not Linux).
    /// A listing of `/proc/self/task` can miss a live thread when another thread exits
    /// during it (the kernel walks the list by index; one test missed its thread in 1–3% of
    /// its runs while other tests' threads ended), so two listings are merged.
    pub(crate) fn now() -> Self {
        let mut threads = Self::listed();
        threads.0.extend(Self::listed().0);
        threads
    }

    /// One listing of `/proc/self/task`.
    fn listed() -> Self {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Self::default();
        };
        let threads = tasks.flatten().filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            Some((tid, (Role::of(&comm), parse(&stat)?)))
        });
        Self(threads.collect())
    }

    /// The mean share per committer thread since `before`, over `seconds` of wall time, of
    /// the committers (by their name now) that were there at both readings.
    pub(crate) fn committers_since(&self, before: &Self, seconds: f64) -> Option<Share> {
        let share = self.summed_since(before, seconds, Role::Committer)?;
        let n = share.threads as f64;
        Some(Share {
            running: share.running / n,
            waiting: share.waiting / n,
            switches_per_s: share.switches_per_s / n,
            ..share
        })
    }

    /// The runtime's threads' shares since `before`, summed (1.0 = one CPU's whole time).
    pub(crate) fn runtime_since(&self, before: &Self, seconds: f64) -> Option<Share> {
        self.summed_since(before, seconds, Role::Runtime)
    }

    fn summed_since(&self, before: &Self, seconds: f64, role: Role) -> Option<Share> {
        let deltas: Vec<(u64, u64, u64)> = self
            .0
            .iter()
            .filter(|(_, (r, _))| *r == role)
            .filter_map(|(tid, (_, now))| {
                let (_, then) = before.0.get(tid)?;
                Some((
                    now.running_ns.saturating_sub(then.running_ns),
                    now.waiting_ns.saturating_sub(then.waiting_ns),
                    now.switches.saturating_sub(then.switches),
                ))
            })
            .collect();
        if deltas.is_empty() || seconds <= 0.0 {
            return None;
        }
        let sum = |f: fn(&(u64, u64, u64)) -> u64| deltas.iter().map(f).sum::<u64>() as f64;
        Some(Share {
            threads: deltas.len(),
            running: sum(|d| d.0) / 1e9 / seconds,
            waiting: sum(|d| d.1) / 1e9 / seconds,
            switches_per_s: sum(|d| d.2) / seconds,
        })
    }
}

impl Share {
    /// `2 committers, each: running 36%, waiting for a CPU 27% of the time, 15000 switches/s`.
    pub(crate) fn describe_committers(&self) -> String {
        format!(
            "{} committers, each: running {:.0}%, waiting for a CPU {:.0}% of the time, {:.0} \
             switches/s",
            self.threads,
            100.0 * self.running,
            100.0 * self.waiting,
            self.switches_per_s
        )
    }

    /// `runtime threads (2): running 0.93 and waiting 0.05 of a CPU in all`.
    pub(crate) fn describe_runtime(&self) -> String {
        format!(
            "runtime threads ({}): running {:.2} and waiting {:.2} of a CPU in all",
            self.threads, self.running, self.waiting
        )
    }
}

/// Each CPU's busy and total time in clock ticks, machine-wide, at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cpus(Vec<(u64, u64)>);

impl Cpus {
    /// Reads `/proc/stat`; empty where there is none (not Linux).
    pub(crate) fn now() -> Self {
        std::fs::read_to_string("/proc/stat").map_or_else(|_| Self::default(), |s| Self::parse(&s))
    }

    /// The `cpuN` lines: user, nice, system, idle, iowait, irq, softirq, steal. Busy is all
    /// but idle, iowait and steal (time the host gave this vCPU to someone else).
    fn parse(stat: &str) -> Self {
        let cpus = stat
            .lines()
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .filter_map(|line| {
                let ticks: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .take(8)
                    .map(|f| f.parse().ok())
                    .collect::<Option<_>>()?;
                let [user, nice, system, idle, iowait, irq, softirq] = *ticks.get(..7)? else {
                    return None;
                };
                let steal = ticks.get(7).copied().unwrap_or(0);
                let sum = |ticks: &[u64]| ticks.iter().fold(0u64, |a, t| a.saturating_add(*t));
                let busy = sum(&[user, nice, system, irq, softirq]);
                Some((busy, sum(&[busy, idle, iowait, steal])))
            });
        Self(cpus.collect())
    }

    /// Each CPU's busy share since `before`, in CPU order; `None` if the CPUs changed or no
    /// tick passed on one of them.
    pub(crate) fn busy_since(&self, before: &Self) -> Option<Vec<f64>> {
        if self.0.is_empty() || self.0.len() != before.0.len() {
            return None;
        }
        let shares = self.0.iter().zip(&before.0).map(|(now, then)| {
            let total = now.1.saturating_sub(then.1);
            (total > 0).then(|| now.0.saturating_sub(then.0) as f64 / total as f64)
        });
        shares.collect()
    }
}

/// `CPUs busy 61% / 24% (machine-wide)`.
pub(crate) fn describe_cpus_busy(shares: &[f64]) -> String {
    let shares: Vec<String> = shares
        .iter()
        .map(|s| format!("{:.0}%", 100.0 * s))
        .collect();
    format!("CPUs busy {} (machine-wide)", shares.join(" / "))
}

/// `schedstat`: time on the CPU (ns), time runnable on a run queue (ns), timeslices run.
fn parse(stat: &str) -> Option<ThreadTimes> {
    let mut fields = stat.split_whitespace().map(str::parse::<u64>);
    Some(ThreadTimes {
        running_ns: fields.next()?.ok()?,
        waiting_ns: fields.next()?.ok()?,
        switches: fields.next()?.ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cpus_busy_share_comes_from_its_own_line() {
        let before = Cpus::parse(
            "cpu  300 0 300 1400 0 0 0 0 0 0\n\
             cpu0 100 0 100 800 0 0 0 0 0 0\n\
             cpu1 200 0 200 600 0 0 0 0 0 0\n\
             intr 12345\nctxt 999\n",
        );
        // CPU 0: 60 of 100 ticks busy (user, system, irq, softirq); CPU 1: 10 of 100 (the
        // 20 of steal and 10 of iowait count as not busy).
        let after = Cpus::parse(
            "cpu  400 0 400 1500 0 0 0 0 0 0\n\
             cpu0 130 0 120 840 0 5 5 0 0 0\n\
             cpu1 205 0 205 660 10 0 0 20 0 0\n",
        );
        let busy = after
            .busy_since(&before)
            .expect("two CPUs in both readings");
        assert_eq!(busy.len(), 2);
        assert!((busy[0] - 0.60).abs() < 1e-9, "{busy:?}");
        assert!((busy[1] - 0.10).abs() < 1e-9, "{busy:?}");
        assert_eq!(
            describe_cpus_busy(&busy),
            "CPUs busy 60% / 10% (machine-wide)"
        );
        // A CPU that came or went, or no reading at all, gives no shares.
        let one = Cpus::parse("cpu0 1 2 3 4 5 6 7 8\n");
        assert!(one.busy_since(&before).is_none());
        assert!(Cpus::default().busy_since(&Cpus::default()).is_none());
        assert!(Cpus::parse("cpu0 x y\n").0.is_empty());
        // Counts at the edge of u64 saturate instead of overflowing.
        let huge = Cpus::parse(&format!("cpu0 {0} {0} 0 {0} 0 0 0 0\n", u64::MAX));
        assert_eq!(huge.0, [(u64::MAX, u64::MAX)]);
    }

    #[test]
    fn shares_come_from_the_threads_seen_in_both_readings() {
        let times = |running_ns, waiting_ns, switches| ThreadTimes {
            running_ns,
            waiting_ns,
            switches,
        };
        use Role::{Committer, Other, Runtime};
        // Thread 2 had not named itself yet at the first reading; 4 is not a committer.
        let before = Threads(HashMap::from([
            (1, (Committer, times(0, 0, 0))),
            (2, (Other, times(10, 0, 5))),
            (4, (Other, times(0, 0, 0))),
            (5, (Runtime, times(0, 0, 0))),
            (6, (Runtime, times(100, 0, 0))),
        ]));
        let after = Threads(HashMap::from([
            (1, (Committer, times(600_000_000, 200_000_000, 1000))),
            (2, (Committer, times(200_000_010, 400_000_000, 3005))),
            // Started after the first reading: not counted.
            (3, (Committer, times(900_000_000, 900_000_000, 9000))),
            (4, (Other, times(900_000_000, 900_000_000, 9000))),
            (5, (Runtime, times(1_500_000_000, 100_000_000, 10))),
            (6, (Runtime, times(300_000_100, 100_000_000, 30))),
        ]));
        let share = after
            .committers_since(&before, 2.0)
            .expect("two threads in both");
        assert_eq!(share.threads, 2);
        assert!((share.running - 0.2).abs() < 1e-9, "{share:?}");
        assert!((share.waiting - 0.15).abs() < 1e-9, "{share:?}");
        assert!((share.switches_per_s - 1000.0).abs() < 1e-9, "{share:?}");
        // The runtime's threads are summed: 1.8 s of running in 2 s is 0.9 of a CPU.
        let runtime = after
            .runtime_since(&before, 2.0)
            .expect("two runtime threads");
        assert_eq!(runtime.threads, 2);
        assert!((runtime.running - 0.9).abs() < 1e-9, "{runtime:?}");
        assert!((runtime.waiting - 0.1).abs() < 1e-9, "{runtime:?}");
        assert!(Threads::default().committers_since(&before, 2.0).is_none());
        assert!(Threads::default().runtime_since(&before, 2.0).is_none());
    }

    #[test]
    fn schedstat_lines_parse_and_garbage_does_not() {
        let t = parse("733000000 536000000 30157\n").expect("three numbers");
        assert_eq!(
            (t.running_ns, t.waiting_ns, t.switches),
            (733000000, 536000000, 30157)
        );
        assert!(parse("12 x 3").is_none());
        assert!(parse("12").is_none());
    }

    #[test]
    fn a_committer_named_thread_of_this_process_is_found() {
        assert_eq!(Role::of("tokio-rt-worker"), Role::Runtime);
        assert_eq!(Role::of("annals-commit-1"), Role::Committer);
        assert_eq!(Role::of("annals-zero"), Role::Other);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("annals-commit-t".to_owned())
            .spawn(move || {
                let _ = started.send(());
                let _ = stopped.recv();
            })
            .expect("a thread");
        running.recv().expect("the thread started");
        // Other tests' threads ending meanwhile can hide it from a reading (see `now`).
        let found = (0..10).any(|_| {
            Threads::now()
                .0
                .values()
                .any(|(role, _)| *role == Role::Committer)
        });
        let _ = stop.send(());
        thread.join().expect("the thread ends");
        assert!(found, "no annals-commit-* thread in /proc/self/task");
    }
}
