//! Public parameters: transparent, so a pure cache (spec §3.13).
//!
//! `Params::<EqAffine>::new(k)` derives every generator by hashing to the curve from a fixed
//! domain string, so all nodes compute the same bytes. The BLAKE2b-256 digest of those bytes
//! is pinned here per `k`; a cached file is used only when its digest matches, otherwise it
//! is regenerated and rewritten atomically. A tampered file (generators with known discrete
//! logarithms) would break the binding of every commitment, so it is never used.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use halo2_proofs::{pasta::EqAffine, poly::commitment::Params};

use crate::Error;

/// Where parameters come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsSource {
    /// Generated in memory at start-up; the disk is never touched (`srsMode = "unsafe"`, a
    /// Go name kept for compatibility: the behaviour is safe).
    Memory,
    /// Cached as `params-k<k>.bin` in this directory (`srsMode = "file"`).
    Dir(PathBuf),
    /// Cached in the file this pattern names once `{k}` is replaced by `k` (`srsPath`).
    Pattern(String),
}

impl ParamsSource {
    /// The cache file for `k`, if this source uses one.
    pub fn file(&self, k: u32) -> Option<PathBuf> {
        match self {
            ParamsSource::Memory => None,
            ParamsSource::Dir(d) => Some(path(d, k)),
            ParamsSource::Pattern(p) => Some(PathBuf::from(p.replace("{k}", &k.to_string()))),
        }
    }
}

/// Pinned BLAKE2b-256 digests of the serialised parameters, per `k`.
pub const PINNED: &[(u32, &str)] = &[
    (
        7,
        "0933a610f4969ef1f4ecb63454dc8f7e91dc7e181e0c86f1814a82f767683f5a",
    ),
    (
        11,
        "773ee1d3dcc65a13e97e4d88119d1d20fb12a8db4443361f370c75bdc2c91382",
    ),
];

/// The pinned digest for `k`, if `k` is one the circuits use.
pub fn pinned(k: u32) -> Option<[u8; 32]> {
    PINNED.iter().find(|(pk, _)| *pk == k).and_then(|(_, h)| {
        let v = hex::decode(h).ok()?;
        v.try_into().ok()
    })
}

/// BLAKE2b-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    let h = blake2b_simd::Params::new().hash_length(32).hash(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(h.as_bytes());
    out
}

/// Serialises parameters.
pub fn to_bytes(p: &Params<EqAffine>) -> Vec<u8> {
    let mut v = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = p.write(&mut v);
    v
}

/// How the parameters for one `k` were obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Generated in memory (memory mode).
    Generated,
    /// Read from the cache; the digest matched.
    Cached,
    /// The cache file was missing or wrong; regenerated (and rewritten if possible).
    Rebuilt {
        /// Why the file was not used.
        reason: String,
        /// Whether the new file was written.
        written: bool,
    },
}

/// The cache file for `k` in `dir`.
pub fn path(dir: &Path, k: u32) -> PathBuf {
    dir.join(format!("params-k{k}.bin"))
}

/// Parameters for `k` from `source`, checked against the pinned digest.
pub fn load(source: &ParamsSource, k: u32) -> Result<(Params<EqAffine>, Origin), Error> {
    let want = pinned(k).ok_or_else(|| Error::Params(format!("no pinned digest for k = {k}")))?;
    let Some(file) = source.file(k) else {
        return Ok((generate(k, &want)?, Origin::Generated));
    };
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = dir.as_path();
    let reason = match std::fs::read(&file) {
        Ok(bytes) if digest(&bytes) == want => match Params::<EqAffine>::read(&mut &bytes[..]) {
            Ok(p) if p.k() == k => return Ok((p, Origin::Cached)),
            Ok(p) => format!("{} holds k = {}", file.display(), p.k()),
            Err(e) => format!("{}: {e}", file.display()),
        },
        Ok(_) => format!("{} does not match the pinned digest", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("{} is missing", file.display())
        }
        Err(e) => format!("read {}: {e}", file.display()),
    };
    if reason.ends_with("is missing") {
        tracing::info!(event = "zkp_params_build", k, reason = %reason, "building the proof parameters cache");
    } else {
        tracing::warn!(event = "zkp_params_rebuild", k, reason = %reason, "rebuilding the proof parameters");
    }
    let params = generate(k, &want)?;
    let written = match write_atomic(dir, &file, &to_bytes(&params), &want) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(event = "zkp_params_unwritable", k, error = %e,
                "keeping the proof parameters in memory only");
            false
        }
    };
    Ok((params, Origin::Rebuilt { reason, written }))
}

/// Generates and checks the parameters for `k`.
fn generate(k: u32, want: &[u8; 32]) -> Result<Params<EqAffine>, Error> {
    let p = Params::<EqAffine>::new(k);
    let got = digest(&to_bytes(&p));
    if &got != want {
        // The generator itself changed (a different halo2 version): refuse rather than
        // produce proofs no other node accepts.
        return Err(Error::Params(format!(
            "generated parameters for k = {k} have digest {}, pinned {}: incompatible halo2_proofs",
            hex::encode(got),
            hex::encode(want)
        )));
    }
    Ok(p)
}

fn write_atomic(dir: &Path, file: &Path, bytes: &[u8], digest: &[u8; 32]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let put = |target: &Path, data: &[u8]| -> std::io::Result<()> {
        let tmp = target.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let r = f.write_all(data).and_then(|()| f.sync_all());
        drop(f);
        match r.and_then(|()| std::fs::rename(&tmp, target)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    };
    put(file, bytes)?;
    let mut sidecar = file.as_os_str().to_owned();
    sidecar.push(".blake2b");
    put(
        Path::new(&sidecar),
        format!("{}\n", hex::encode(digest)).as_bytes(),
    )
}
