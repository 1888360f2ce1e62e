//! The byte-level I/O under the engine. Every file access goes through [`Vfs`] and
//! [`Device`], so tests can substitute devices that crash (dropping unsynced writes) or fail.

use std::fmt::Debug;
pub mod sim;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One open file.
///
/// Contract: `write_at` may be torn or lost by a crash until a later `sync_data` on the same
/// device returns `Ok`; after that, the bytes survive a crash. `set_len` changes are durable
/// after `sync_data` too. A failed `sync_data` means the state of unsynced bytes is unknown.
#[allow(clippy::len_without_is_empty)] // a file's length is a number, not a collection
pub trait Device: Send + Sync + Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Replaces `buf`'s contents with the `len` bytes from `offset`, reusing its capacity;
    /// fails with `UnexpectedEof` past the end (`buf`'s contents are then unspecified).
    fn read_into(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        read_zeroed(self, offset, len, buf)
    }
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// A directory tree of devices.
pub trait Vfs: Send + Sync + Debug {
    /// Opens a file, creating it (empty) when `create` is set and it does not exist.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn Device>>;
    /// True when the file exists.
    fn exists(&self, path: &Path) -> bool;
    /// The names of the files in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on a file that lasts as long as the returned guard.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>>;
}

/// `len` bytes from `offset` through `read_at`, into a zeroed buffer.
fn read_zeroed<D: Device + ?Sized>(
    device: &D,
    offset: u64,
    len: usize,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.clear();
    buf.resize(len, 0);
    device.read_at(buf, offset)
}

/// Reads at least this large skip zeroing their buffer ([`FileDevice::read_into`]); smaller
/// ones (single records) would pay more for opening a handle than zeroing costs.
const UNZEROED_READ_MIN: usize = 64 << 10;

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdVfs;

/// A real file.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
}

impl Device for FileDevice {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Large reads (log scans) fill the buffer's spare capacity through a handle of their
    /// own instead of zeroing it first: zeroing 1 MiB cost as much as reading it (9% of a
    /// warm `$all` scan). The handle is this file reopened through `/proc/self/fd`, so its
    /// offset is private (`read_at` callers share `self.file`) and a later rename or change
    /// of working directory does not matter; where that is unavailable, the buffer is zeroed.
    fn read_into(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::fd::AsRawFd;
        let own = if len >= UNZEROED_READ_MIN {
            File::open(format!("/proc/self/fd/{}", self.file.as_raw_fd())).ok()
        } else {
            None
        };
        let Some(mut own) = own else {
            return read_zeroed(self, offset, len, buf);
        };
        own.seek(SeekFrom::Start(offset))?;
        buf.clear();
        buf.reserve(len);
        own.take(len as u64).read_to_end(buf)?;
        if buf.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} bytes at {offset} of {}: the file ends first",
                    len,
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data().map_err(|e| annotate(e, &self.path))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Vfs for StdVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn Device>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(|e| annotate(e, path))?;
        Ok(Arc::new(FileDevice {
            file,
            path: path.to_owned(),
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| annotate(e, dir))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path).map_err(|e| annotate(e, path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to).map_err(|e| annotate(e, from))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| annotate(e, dir))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| annotate(e, dir))
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is locked by another process (is annals already running?)",
                    path.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(annotate(e, path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_into_returns_the_bytes_read_at_does_and_refuses_to_read_past_the_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let device = StdVfs.open(&dir.path().join("f"), true).expect("open");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        device.write_at(&bytes, 0).expect("write");
        // Small (zeroed buffer) and large (own handle) reads, at the start, inside, to the end.
        for (offset, len) in [
            (0, 100),
            (7, 70_000),
            (1, UNZEROED_READ_MIN),
            (0, 300_000),
            (250_000, 50_000),
        ] {
            // Into a buffer holding other bytes, as a reused one does.
            let mut got = vec![9; 1_000];
            device.read_into(offset, len, &mut got).expect("read");
            assert_eq!(
                got,
                bytes[offset as usize..offset as usize + len],
                "{offset}+{len}"
            );
        }
        for (offset, len) in [
            (299_990, 100),
            (250_000, 70_000),
            (300_001, UNZEROED_READ_MIN),
        ] {
            let err = device
                .read_into(offset, len, &mut Vec::new())
                .expect_err("past the end");
            assert_eq!(
                err.kind(),
                io::ErrorKind::UnexpectedEof,
                "{offset}+{len}: {err}"
            );
        }
    }
}
