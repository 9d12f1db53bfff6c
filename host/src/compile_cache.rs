//! This host's disk cache of compiled machine code, so a restarted host serves a large function
//! (a 15–20 MB language runtime takes 10–20 s to compile) without compiling it again.
//!
//! One file per digest and engine configuration: `<digest>-<engine>.cwasm`, holding a magic
//! line, the SHA-256 of the payload and wasmtime's serialized component. A file that is
//! truncated, corrupt or written by another engine configuration is ignored, removed and rebuilt.
//! Machine code is only ever loaded from this directory, which only this host's user can write
//! (created `0700`); it is never read from Redis or any other shared place.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every cache file; bump when the layout changes.
const MAGIC: &[u8; 8] = b"GFCWASM1";
const CHECKSUM_BYTES: usize = 32;

pub struct CompileCache {
    dir: PathBuf,
    /// Hex digest of wasmtime's compatibility hash of our engine configuration: a host with
    /// other settings (or another wasmtime) never even opens this host's files.
    engine_key: String,
}

impl CompileCache {
    /// Opens (creating if needed, owner-only) the cache directory `dir` for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut hasher = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The cached component for `digest`, or `None` (missing, corrupt or foreign: then the file
    /// is removed so the next store rebuilds it).
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        let file = std::fs::read(&path).ok()?;
        let payload = match verified_payload(&file) {
            Some(payload) => payload,
            None => {
                tracing::warn!(path = %path.display(), "ignoring a corrupt compile cache file");
                std::fs::remove_file(&path).ok();
                return None;
            }
        };
        // SAFETY: `Component::deserialize` trusts its input to be machine code that
        // `Component::serialize` produced for a compatible engine. This payload was written by
        // `store` below (a Goldfish host, same engine configuration: the file name carries the
        // engine's compatibility hash, and wasmtime re-checks its own header) into a directory
        // only this user can write, and its SHA-256 matches, so it is not truncated or corrupt.
        // Whoever can write that directory as this user could replace the host binary itself.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, payload) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring an unusable compile cache file: {e}");
                std::fs::remove_file(&path).ok();
                None
            }
        }
    }

    /// Writes `component`'s machine code for `digest`, atomically (temporary file, then rename),
    /// so a concurrent reader sees the whole file or none.
    pub fn store(&self, digest: &str, component: &Component) -> anyhow::Result<()> {
        let payload = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("serializing: {e}"))?;
        let checksum = Sha256::digest(&payload);
        let path = self.path(digest);
        let temporary = self.dir.join(format!(
            ".{digest}-{}.{:016x}.tmp",
            self.engine_key,
            rand::random::<u64>()
        ));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(MAGIC)?;
        file.write_all(&checksum)?;
        file.write_all(&payload)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        Ok(())
    }
}

/// The payload of a cache file whose magic and checksum are right.
fn verified_payload(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(MAGIC.as_slice())?;
    let (checksum, payload) = rest.split_at_checked(CHECKSUM_BYTES)?;
    (Sha256::digest(payload).as_slice() == checksum).then_some(payload)
}

/// Feeds `Hash` output into SHA-256, for a cache key that is stable for one build.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only `finalize` is used; `Hasher` requires this.
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_files_with_the_right_checksum_are_trusted() {
        let payload = b"machine code".to_vec();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(&payload));
        file.extend_from_slice(&payload);
        assert_eq!(verified_payload(&file), Some(payload.as_slice()));
        // Truncated, flipped, foreign magic, too short.
        assert_eq!(verified_payload(&file[..file.len() - 1]), None);
        let mut flipped = file.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(verified_payload(&flipped), None);
        let mut foreign = file.clone();
        foreign[0] = b'X';
        assert_eq!(verified_payload(&foreign), None);
        assert_eq!(verified_payload(&file[..20]), None);
    }
}
