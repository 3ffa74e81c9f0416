//! Atomic output files: write to a temporary file in the destination's folder, rename
//! over the destination only when everything was written and synced.
//!
//! A run that fails (or is killed) never leaves a half-written destination: it is either
//! absent or the previous complete file. On a clean error the temporary file is removed,
//! whether the error came while writing (the file is dropped) or from
//! [`AtomicFile::commit`] itself (a final flush hitting a full disk, a failed sync or
//! rename); only a SIGKILL can leave one behind, named `.NAME.qforge-tmp.PID`.
//!
//! The SHA-256 of the output is computed while writing; a writer that seeks back (QNAT,
//! safetensors headers written last) makes [`AtomicFile::commit`] hash the file again.
//! [`AtomicFile::create_with`] can leave out the hash (`quantize` without `--digest`;
//! commit with [`AtomicFile::commit_unhashed`]) and the sync: a GGUF that `quantize` writes
//! is renamed into place unsynced, as llama-quantize and `cp` leave their outputs (a killed
//! process still never leaves a half-written destination; only a power loss right after
//! the run can lose the new data, as it can `cp`'s), because syncing a 259 MB file costs
//! twice the time `cp` takes to copy it.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::SourceFile;

/// What an [`AtomicFile`] does besides writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Hash the bytes as they are written.
    pub hash: bool,
    /// Sync the file to disk before the rename.
    pub sync: bool,
}

/// A file being written that becomes `dest` on [`AtomicFile::commit`].
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    out: Option<HashingWriter<BufWriter<File>>>,
    sync: bool,
    seeked: bool,
    /// Set once the rename succeeded; until then dropping removes `tmp`.
    committed: bool,
}

impl AtomicFile {
    /// Creates the temporary file next to `dest`; the bytes are hashed as written and
    /// synced before the rename.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        Self::create_with(
            dest,
            Mode {
                hash: true,
                sync: true,
            },
        )
    }

    /// [`AtomicFile::create`] with or without the hash (without: commit it with
    /// [`AtomicFile::commit_unhashed`]) and the sync.
    pub fn create_with(dest: &Path, mode: Mode) -> Result<AtomicFile> {
        let name = dest
            .file_name()
            .with_context(|| format!("output path {} has no file name", dest.display()))?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{}.qforge-tmp.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("creating temporary output {}", tmp.display()))?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            out: Some(HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, file),
                hasher: mode.hash.then(Sha256::new),
            }),
            sync: mode.sync,
            seeked: false,
            committed: false,
        })
    }

    /// Path of the temporary file.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Syncs (unless made without), renames onto the destination, and returns the SHA-256 of the bytes written
    /// (the file is read back for it when it was made unhashed or was seeked in).
    /// On any error the temporary file is removed (when `self` drops) and the
    /// destination is left as it was.
    pub fn commit(self) -> Result<[u8; 32]> {
        Ok(self.finish(true)?.expect("a digest was asked for"))
    }

    /// [`AtomicFile::commit`] without a digest.
    pub fn commit_unhashed(self) -> Result<()> {
        self.finish(false).map(|_| ())
    }

    fn finish(mut self, want_digest: bool) -> Result<Option<[u8; 32]>> {
        let out = self.out.take().expect("not yet committed");
        let (buf, digest) = out.finish_parts();
        let mut file = buf
            .into_inner()
            .map_err(|e| {
                let (err, buf) = e.into_parts();
                discard(buf);
                err
            })
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        if self.sync {
            file.sync_all()
                .with_context(|| format!("syncing {}", self.tmp.display()))?;
        }
        let digest = match (want_digest, digest) {
            (false, _) => None,
            (true, Some(d)) if !self.seeked => Some(d),
            (true, _) => Some(
                hash_from_start(&mut file)
                    .with_context(|| format!("hashing {}", self.tmp.display()))?,
            ),
        };
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
        })?;
        self.committed = true;
        Ok(digest)
    }
}

impl AtomicFile {
    /// Appends bytes `offset..offset + len` of the mapped input `src` (hashed too, when
    /// hashing), in pieces of [`COPY_PIECE`] bytes: each piece's pages are mapped in one
    /// call ([`SourceFile::populate`]), written with one `write` straight from the map, and
    /// let go ([`SourceFile::release`]), so the resident set grows by a piece at most.
    /// One `write` of a large piece costs the kernel less than `copy_file_range`, which
    /// moves a page at a time and two part pages per page when the input and output
    /// offsets differ within a page (a GGUF's tensors are 32-byte aligned).
    pub fn copy_from(&mut self, src: &SourceFile, offset: u64, len: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= src.len())
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let data = src.data();
        let mut at = offset;
        while at < end {
            let next = end.min(at + COPY_PIECE);
            src.populate(at..next);
            for piece in data[at as usize..next as usize].chunks(WRITE_PIECE) {
                self.write_all(piece)?;
            }
            // From `offset`: the 64 KiB piece that straddled the last boundary goes too.
            src.release(offset.max(at.saturating_sub(64 << 10))..next);
            at = next;
        }
        Ok(())
    }
}

/// Bytes an [`AtomicFile::copy_from`] maps at a time.
pub const COPY_PIECE: u64 = 8 << 20;

/// Bytes an [`AtomicFile::copy_from`] hands to one `write`. Measured on a 259 MB copy after
/// `cp` and `rm` of another file, 10 runs a size: with 4 or 8 MiB writes two to four runs
/// took 1.5-3x longer, all of it in the kernel's copy into the page cache; with 2 MiB
/// (20 runs) none did, at the 8 MiB speed; 1 MiB was steady but about 6% slower.
const WRITE_PIECE: usize = 2 << 20;

/// Drops a buffered writer without flushing it: its file is about to be removed, and
/// after a write error (EFBIG) flushing would only fail again.
fn discard(buf: BufWriter<File>) {
    let _ = buf.into_parts();
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.as_mut().expect("not yet committed").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().expect("not yet committed").flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.seeked = true;
        self.out
            .as_mut()
            .expect("not yet committed")
            .inner
            .seek(pos)
    }
}

fn hash_from_start(file: &mut File) -> std::io::Result<[u8; 32]> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            discard(out.finish_parts().0);
        }
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A directory being filled that becomes `dest` on [`AtomicDir::commit`]; removed with
/// its contents if dropped before. `dest` must not exist yet.
pub struct AtomicDir {
    dest: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl AtomicDir {
    /// Creates the temporary directory next to `dest`.
    pub fn create(dest: &Path) -> Result<AtomicDir> {
        if dest.exists() {
            crate::bail_invalid!(
                "output {} already exists; remove it or choose another path",
                dest.display()
            );
        }
        let name = dest
            .file_name()
            .with_context(|| format!("output path {} has no name", dest.display()))?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = parent.join(format!(
            ".{}.qforge-tmp.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::create_dir(&tmp)
            .with_context(|| format!("creating temporary folder {}", tmp.display()))?;
        Ok(AtomicDir {
            dest: dest.to_path_buf(),
            tmp,
            committed: false,
        })
    }

    /// Path of a file inside the temporary directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Renames the directory onto its destination.
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A writer that hashes everything passing through it with SHA-256.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Option<Sha256>,
}

impl<W: Write> HashingWriter<W> {
    /// The inner writer and the digest of all bytes written, if hashing.
    fn finish_parts(self) -> (W, Option<[u8; 32]>) {
        (self.inner, self.hasher.map(|h| h.finalize().into()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `dest` through an [`AtomicFile`]; returns their SHA-256.
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<[u8; 32]> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)?;
    f.commit()
}

/// SHA-256 of a file's contents (streamed), lower-case hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_and_file_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("w.txt");
        let digest = write_file(&dest, b"abc").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert_eq!(file_sha256(&dest).unwrap(), hex(&digest));
        assert!(file_sha256(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn commit_renames_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"abc").unwrap();
        assert!(!dest.exists());
        let digest = f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert_eq!(
            hex(&digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn seeking_writers_still_get_the_file_digest() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"xbc").unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"a").unwrap();
        let digest = f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert_eq!(
            hex(&digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn dropping_without_commit_keeps_the_previous_file_and_removes_the_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        std::fs::write(&dest, b"old").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"partial").unwrap();
        let tmp = f.temp_path().to_path_buf();
        assert!(tmp.exists());
        drop(f);
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    }

    #[test]
    fn a_failing_commit_removes_the_temp_file() {
        // A rename onto a non-empty folder fails after the flush and sync succeeded;
        // a failing final flush (EFBIG) takes the same path, see
        // tests/reliability.rs disk_full_error_removes_the_temporary_file.
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("keep"), b"x").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"abc").unwrap();
        let tmp = f.temp_path().to_path_buf();
        assert!(tmp.exists());
        assert!(f.commit().is_err());
        assert!(!tmp.exists(), "temp file left after a failed commit");
        assert_eq!(std::fs::read(dest.join("keep")).unwrap(), b"x");
    }
}
