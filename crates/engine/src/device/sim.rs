//! An in-memory file system for crash and fault tests.
//!
//! Every file keeps two images: what was written and what is durable (as of its last
//! successful `sync_data`), plus the list of writes since. Directory entries (creations,
//! renames, removals) are durable only after `sync_dir`. A [`Plan`] decides when the
//! simulated machine stops:
//!
//! - `CrashAt(k)`: the k-th mutating operation (write, sync, set_len, rename, remove) and all
//!   later ones fail as if the power went out; [`SimVfs::after_power_loss`] then builds the
//!   disk a rebooted machine would see: durable bytes, plus a random subset of the unsynced
//!   writes applied in random order, the last one possibly torn at a 512-byte or 4-KiB
//!   boundary, and a random prefix of the unsynced directory changes.
//! - `FailAt { op, kind }`: operations of `kind` fail from the `op`-th mutating operation
//!   on, but the machine keeps running (an I/O error or a full disk); the written image
//!   stays as it is for reopening.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{Device, Vfs};

/// Which operations a fault plan fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `write_at`.
    Write,
    /// `sync_data` and `sync_dir`.
    Sync,
    /// `set_len`.
    SetLen,
    /// `write_at` fails with "no space left on device" (`StorageFull`).
    DiskFull,
}

/// When the simulated machine misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Never.
    Healthy,
    /// Power loss at the k-th mutating operation (1-based).
    CrashAt(u64),
    /// Operations of this kind fail from the k-th mutating operation on.
    FailAt {
        /// 1-based operation count.
        op: u64,
        /// What fails.
        kind: FaultKind,
    },
}

type FileId = u64;

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct File {
    written: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    /// Operations made durable so far: `pending[i]` is operation `synced_ops + i`.
    synced_ops: u64,
}

#[derive(Debug, Clone)]
enum NsOp {
    Link(PathBuf, FileId),
    Unlink(PathBuf),
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<FileId, File>,
    names: HashMap<PathBuf, FileId>,
    durable_names: HashMap<PathBuf, FileId>,
    pending_ns: Vec<NsOp>,
    next_id: FileId,
    ops: u64,
    plan: Option<Plan>,
    crashed: bool,
    /// How long each `sync_data` takes (a slow disk), spent outside the lock.
    sync_delay: Duration,
}

/// The in-memory file system. Clones share the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimVfs {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct SimDevice {
    state: Arc<Mutex<State>>,
    id: FileId,
}

fn crashed() -> io::Error {
    io::Error::other("simulated power loss: the machine is off")
}

impl State {
    /// Counts a mutating operation; fails it if the plan says so.
    fn step(&mut self, kind: FaultKind) -> io::Result<()> {
        if self.crashed {
            return Err(crashed());
        }
        self.ops += 1;
        match self.plan {
            Some(Plan::CrashAt(k)) if self.ops >= k => {
                self.crashed = true;
                Err(crashed())
            }
            Some(Plan::FailAt { op, kind: fail }) if self.ops >= op => match (fail, kind) {
                (FaultKind::DiskFull, FaultKind::Write) => Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "simulated full disk",
                )),
                (f, k) if f == k => Err(io::Error::other(format!("simulated {k:?} failure"))),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn file(&mut self, id: FileId) -> io::Result<&mut File> {
        self.files
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("file vanished"))
    }
}

fn apply(image: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { offset, data } => {
            let offset = *offset as usize;
            if image.len() < offset + data.len() {
                image.resize(offset + data.len(), 0);
            }
            image[offset..offset + data.len()].copy_from_slice(data);
        }
        Pending::SetLen(len) => image.resize(*len as usize, 0),
    }
}

impl Device for SimDevice {
    fn len(&self) -> io::Result<u64> {
        let mut state = self.state.lock();
        Ok(state.file(self.id)?.written.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        let file = state.file(self.id)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let bytes = file
            .written
            .get(start..start.saturating_add(buf.len()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.step(FaultKind::Write)?;
        let file = state.file(self.id)?;
        let op = Pending::Write {
            offset,
            data: buf.to_vec(),
        };
        apply(&mut file.written, &op);
        file.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        // Exactly the writes made before the call become durable, as `fdatasync` promises;
        // writes made while a slow sync runs stay pending (syncs may overlap).
        let (delay, upto) = {
            let mut state = self.state.lock();
            let delay = state.sync_delay;
            let file = state.file(self.id)?;
            (delay, file.synced_ops + file.pending.len() as u64)
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut state = self.state.lock();
        state.step(FaultKind::Sync)?;
        let file = state.file(self.id)?;
        let covered = (upto.saturating_sub(file.synced_ops) as usize).min(file.pending.len());
        for op in file.pending.drain(..covered) {
            apply(&mut file.durable, &op);
        }
        file.synced_ops += covered as u64;
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.step(FaultKind::SetLen)?;
        let file = state.file(self.id)?;
        let op = Pending::SetLen(len);
        apply(&mut file.written, &op);
        file.pending.push(op);
        Ok(())
    }
}

impl SimVfs {
    /// An empty disk that behaves according to `plan`.
    pub fn new(plan: Plan) -> Self {
        let vfs = Self::default();
        vfs.state.lock().plan = Some(plan);
        vfs
    }

    /// The same disk, whose syncs each take `delay` from now on. A sync makes durable
    /// exactly the writes made before it was called; writes made while it runs stay
    /// unsynced (a real disk may or may not keep them, so a crash test must not rely on
    /// them).
    pub fn with_sync_delay(self, delay: Duration) -> Self {
        self.state.lock().sync_delay = delay;
        self
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// True once a `CrashAt` plan fired.
    pub fn has_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// The same disk, healthy from now on (for reopening after an I/O fault).
    pub fn healed(&self) -> Self {
        let mut state = self.state.lock();
        state.plan = Some(Plan::Healthy);
        state.crashed = false;
        drop(state);
        self.clone()
    }

    /// The disk a rebooted machine would see, chosen by `seed`: durable bytes plus a random
    /// subset of unsynced writes in random order (the last one possibly torn), and a random
    /// prefix of unsynced directory changes.
    pub fn after_power_loss(&self, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let state = self.state.lock();
        let mut names = state.durable_names.clone();
        let keep_ns = rng.below(state.pending_ns.len() as u64 + 1) as usize;
        for op in &state.pending_ns[..keep_ns] {
            match op {
                NsOp::Link(path, id) => {
                    names.insert(path.clone(), *id);
                }
                NsOp::Unlink(path) => {
                    names.remove(path);
                }
            }
        }
        let mut files = HashMap::new();
        for (&id, file) in &state.files {
            let mut image = file.durable.clone();
            let mut pending = file.pending.clone();
            // Reorder, then keep a random subset.
            for i in (1..pending.len()).rev() {
                pending.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let kept: Vec<_> = pending.into_iter().filter(|_| rng.below(2) == 0).collect();
            let count = kept.len();
            for (i, op) in kept.into_iter().enumerate() {
                match op {
                    Pending::Write { offset, data } if i + 1 == count && rng.below(2) == 0 => {
                        let boundary = if rng.below(2) == 0 { 512 } else { 4096 };
                        let torn =
                            (rng.below(data.len() as u64 / boundary + 1) * boundary) as usize;
                        let torn = torn.min(data.len());
                        apply(
                            &mut image,
                            &Pending::Write {
                                offset,
                                data: data[..torn].to_vec(),
                            },
                        );
                    }
                    op => apply(&mut image, &op),
                }
            }
            files.insert(
                id,
                File {
                    written: image.clone(),
                    durable: image,
                    pending: Vec::new(),
                    synced_ops: 0,
                },
            );
        }
        let rebooted = State {
            files,
            durable_names: names.clone(),
            names,
            next_id: state.next_id,
            plan: Some(Plan::Healthy),
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(rebooted)),
        }
    }

    /// Reads a whole file (for corruption tests).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.lock();
        let id = state.names.get(path)?;
        state.files.get(id).map(|f| f.written.clone())
    }

    /// Replaces a whole file's content, durably (for corruption tests).
    pub fn write_file(&self, path: &Path, bytes: Vec<u8>) -> bool {
        let mut state = self.state.lock();
        let Some(&id) = state.names.get(path) else {
            return false;
        };
        state.files.insert(
            id,
            File {
                written: bytes.clone(),
                durable: bytes,
                pending: Vec::new(),
                synced_ops: 0,
            },
        );
        true
    }

    /// The paths of all files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<_> = self.state.lock().names.keys().cloned().collect();
        paths.sort();
        paths
    }
}

impl Vfs for SimVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn Device>> {
        let mut state = self.state.lock();
        if state.crashed {
            return Err(crashed());
        }
        let id = match state.names.get(path) {
            Some(id) => *id,
            None if create => {
                let id = state.next_id;
                state.next_id += 1;
                state.files.insert(id, File::default());
                state.names.insert(path.to_owned(), id);
                state.pending_ns.push(NsOp::Link(path.to_owned(), id));
                id
            }
            None => {
                let msg = format!("{}: no such file", path.display());
                return Err(io::Error::new(io::ErrorKind::NotFound, msg));
            }
        };
        Ok(Arc::new(SimDevice {
            state: Arc::clone(&self.state),
            id,
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        self.state.lock().names.contains_key(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        let mut names: Vec<String> = state
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.step(FaultKind::Write)?;
        state.names.remove(path);
        state.pending_ns.push(NsOp::Unlink(path.to_owned()));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.step(FaultKind::Write)?;
        let id = state
            .names
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "rename source missing"))?;
        state.names.insert(to.to_owned(), id);
        state.pending_ns.push(NsOp::Unlink(from.to_owned()));
        state.pending_ns.push(NsOp::Link(to.to_owned(), id));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.step(FaultKind::Sync)?;
        let (in_dir, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut state.pending_ns)
            .into_iter()
            .partition(|op| match op {
                NsOp::Link(p, _) | NsOp::Unlink(p) => p.parent() == Some(dir),
            });
        for op in in_dir {
            match op {
                NsOp::Link(path, id) => {
                    state.durable_names.insert(path, id);
                }
                NsOp::Unlink(path) => {
                    state.durable_names.remove(&path);
                }
            }
        }
        state.pending_ns = rest;
        Ok(())
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn lock(&self, _path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        Ok(Box::new(()))
    }
}

/// A small deterministic generator (SplitMix64), so a seed reproduces a run.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}
