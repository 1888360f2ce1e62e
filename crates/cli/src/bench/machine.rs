//! The machine's own limits, measured first: fdatasync rate and sequential write bandwidth.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// What the disk can do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Machine {
    pub(crate) fdatasync_per_s: f64,
    pub(crate) seq_write_mib_s: f64,
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
    let chunk = vec![9u8; 1 << 20];
    let total_mib = 256u64;
    let started = Instant::now();
    for i in 0..total_mib {
        file.write_all_at(&chunk, i << 20)?;
    }
    file.sync_data()?;
    let seq_write_mib_s = total_mib as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Machine {
        fdatasync_per_s,
        seq_write_mib_s,
    })
}
