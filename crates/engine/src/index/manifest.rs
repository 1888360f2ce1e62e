//! The index manifest: which runs exist and the log address up to which they cover the log
//! (the recovery checkpoint). Replaced atomically (write temp, fsync, rename, fsync dir).
//!
//! Layout: `[magic 8][version 1][pad 7][checkpoint position u64][checkpoint address u64]
//! [next run id u64][run count u64]` then per run `[id u64][level u64]`, then `[crc32c u32]`.

use std::path::Path;

use annals_core::StorageError;

use crate::device::Vfs;

/// The manifest's file name.
pub const FILE_NAME: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"ANNALSMF";
const VERSION: u8 = 1;

/// The manifest's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Records with a lower position are all in the runs.
    pub checkpoint_position: u64,
    /// Log address of the record at `checkpoint_position` (where replay starts).
    pub checkpoint_address: u64,
    /// The id the next run gets.
    pub next_run_id: u64,
    /// The runs: (id, level).
    pub runs: Vec<(u64, u8)>,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.extend_from_slice(&[0; 7]);
        for v in [
            self.checkpoint_position,
            self.checkpoint_address,
            self.next_run_id,
            self.runs.len() as u64,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for (id, level) in &self.runs {
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&u64::from(*level).to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < 52 {
            return Err("manifest is truncated".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("manifest checksum mismatch".into());
        }
        if &body[..8] != MAGIC || body[8] != VERSION {
            return Err("bad manifest magic or version".into());
        }
        let u = |i: usize| super::le_u64(&body[16 + i * 8..24 + i * 8]);
        let count = u(3) as usize;
        if body.len() != 48 + count * 16 {
            return Err("manifest length does not match its run count".into());
        }
        let runs = (0..count)
            .map(|i| (u(4 + 2 * i), u8::try_from(u(5 + 2 * i)).unwrap_or(u8::MAX)))
            .collect();
        Ok(Self {
            checkpoint_position: u(0),
            checkpoint_address: u(1),
            next_run_id: u(2),
            runs,
        })
    }

    /// Loads the manifest; `Ok(None)` when there is none, `Err` with the reason when it is
    /// unreadable.
    pub fn load(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Self>, StorageError> {
        let path = dir.join(FILE_NAME);
        if !vfs.exists(&path) {
            return Ok(None);
        }
        let device = vfs
            .open(&path, false)
            .map_err(|e| StorageError::io("opening manifest", e))?;
        let len = device
            .len()
            .map_err(|e| StorageError::io("sizing manifest", e))?;
        let mut buf = vec![0; usize::try_from(len).unwrap_or(0).min(1 << 24)];
        device
            .read_at(&mut buf, 0)
            .map_err(|e| StorageError::io("reading manifest", e))?;
        Self::decode(&buf)
            .map(Some)
            .map_err(|detail| StorageError::corruption(&path, 0, detail))
    }

    /// Writes the manifest atomically and durably.
    pub fn store(&self, vfs: &dyn Vfs, dir: &Path) -> Result<(), StorageError> {
        let tmp = dir.join("MANIFEST.tmp");
        let io = |e| StorageError::io("writing the index manifest", e);
        let device = vfs.open(&tmp, true).map_err(io)?;
        device.set_len(0).map_err(io)?;
        device.write_at(&self.encode(), 0).map_err(io)?;
        device.sync_data().map_err(io)?;
        vfs.rename(&tmp, &dir.join(FILE_NAME)).map_err(io)?;
        vfs.sync_dir(dir).map_err(io)
    }
}
