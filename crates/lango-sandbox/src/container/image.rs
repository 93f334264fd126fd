//! Building the sandbox image locally, from the worker binary alone (spec §2.3.1): no base
//! image and no registry. The build context holds the worker at
//! `/usr/local/bin/lango-sandbox-worker`, exactly the shared libraries `ldd` lists for it (and
//! the loader), and an empty `/tmp`; the image runs as `65532:65532` with the worker as its
//! entrypoint and no `CMD`. It is tagged `<repo>:<first 12 hex of the binary's SHA-256>` and
//! `<repo>:latest`, so a configuration can pin the exact build.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use bollard::{
    Docker,
    query_parameters::{BuildImageOptions, TagImageOptions},
};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::Error;

/// Where the worker lives in the image.
pub const WORKER_IN_IMAGE: &str = "/usr/local/bin/lango-sandbox-worker";

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The engine's image ID (`sha256:…`).
    pub id: String,
    /// `<repo>:<hash12>`.
    pub tag: String,
}

/// `PATH` for a helper when the node has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command for a helper program the node runs (K-8): it gets none of the node's
/// environment, which holds the PKCS#11 PIN (`LANGO_PKCS11_PIN`), cloud credentials
/// (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and loader settings (`LD_PRELOAD` would even change what
/// `ldd` lists). Only `PATH` is passed, to find the program. (The variables cannot be removed
/// from the node's own environment: `std::env::remove_var` is `unsafe`, and the other crates
/// forbid unsafe code.)
fn helper(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_clear().env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    );
    c
}

/// The shared objects `worker` needs, as `ldd` reports them (absolute paths; the vDSO is
/// skipped). A static binary needs none. `ldd` runs without the node's environment.
pub fn shared_libraries(worker: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = helper("ldd")
        .arg(worker)
        .output()
        .map_err(|e| Error::Config(format!("cannot run ldd: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // glibc's ldd says "not a dynamic executable" (and fails) for static binaries.
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(Error::Config(format!(
            "ldd {}: {}",
            worker.display(),
            err.trim()
        )));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
        if line.contains("not found") {
            return Err(Error::Config(format!("ldd: {}", line.trim())));
        }
    }
    Ok(libs)
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    inside: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), Error> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, inside, data)
        .map_err(|e| Error::Config(format!("build context: {e}")))
}

/// The build context (a tar) for `worker`.
pub fn build_context(worker: &Path) -> Result<Vec<u8>, Error> {
    let binary = std::fs::read(worker)
        .map_err(|e| Error::Config(format!("worker binary {}: {e}", worker.display())))?;
    let mut tar = tar::Builder::new(Vec::new());
    let dockerfile = format!(
        "FROM scratch\nCOPY rootfs/ /\nUSER 65532:65532\nENTRYPOINT [\"{WORKER_IN_IMAGE}\", \"--sandbox-worker\"]\n"
    );
    append_file(&mut tar, "Dockerfile", dockerfile.as_bytes(), 0o644)?;
    append_file(
        &mut tar,
        &format!("rootfs{WORKER_IN_IMAGE}"),
        &binary,
        0o755,
    )?;
    for lib in shared_libraries(worker)? {
        // Read through symlinks, store under the name the loader asks for.
        let data = std::fs::read(&lib)
            .map_err(|e| Error::Config(format!("library {}: {e}", lib.display())))?;
        append_file(&mut tar, &format!("rootfs{}", lib.display()), &data, 0o755)?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o1777);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "rootfs/tmp/", std::io::empty())
        .map_err(|e| Error::Config(format!("build context: {e}")))?;
    let mut bytes = tar
        .into_inner()
        .map_err(|e| Error::Config(format!("build context: {e}")))?;
    bytes.flush().ok();
    Ok(bytes)
}

/// Builds (or finds) the image for `worker` and tags it `<repo>:<hash12>` and `<repo>:latest`.
/// `progress` receives the engine's build output lines.
pub async fn build_worker_image(
    docker: &Docker,
    worker: &Path,
    repo: &str,
    mut progress: impl FnMut(&str),
) -> Result<BuiltImage, Error> {
    let binary = std::fs::read(worker)
        .map_err(|e| Error::Config(format!("worker binary {}: {e}", worker.display())))?;
    let hash = hex::encode(Sha256::digest(&binary));
    let tag = format!("{repo}:{}", &hash[..12]);
    drop(binary);
    let exists = docker.inspect_image(&tag).await.ok().and_then(|i| i.id);
    if exists.is_none() {
        let context = build_context(worker)?;
        let opts = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(tag.clone()),
            rm: true,
            forcerm: true,
            pull: None,
            ..Default::default()
        };
        let mut stream = docker.build_image(opts, None, Some(bollard::body_full(context.into())));
        let build = async {
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| Error::Engine(format!("build image {tag}: {e}")))?;
                if let Some(d) = info.error_detail {
                    return Err(Error::Engine(format!(
                        "build image {tag}: {}",
                        d.message.unwrap_or_default()
                    )));
                }
                if let Some(s) = info.stream {
                    let s = s.trim();
                    if !s.is_empty() {
                        progress(s);
                    }
                }
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(300), build)
            .await
            .map_err(|_| Error::Engine(format!("build image {tag}: no end within 300s")))??;
    }
    docker
        .tag_image(
            &tag,
            Some(TagImageOptions {
                repo: Some(repo.into()),
                tag: Some("latest".into()),
            }),
        )
        .await
        .map_err(|e| Error::Engine(format!("tag {tag} as {repo}:latest: {e}")))?;
    let id = docker
        .inspect_image(&tag)
        .await
        .map_err(|e| Error::Engine(format!("inspect {tag}: {e}")))?
        .id
        .ok_or_else(|| Error::Engine(format!("image {tag} has no ID")))?;
    Ok(BuiltImage { id, tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_of_a_dynamic_binary_lists_libc_and_the_loader() {
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
    }

    /// Marks the re-executed test process of `helpers_get_none_of_the_nodes_environment`.
    const CHILD: &str = "LANGO_TEST_HELPER_ENV_CHILD";
    const PIN: &str = "pin-must-not-reach-a-helper-7391";

    /// K-8: the PKCS#11 PIN and cloud credentials in the node's environment never reach a
    /// helper it spawns. The test runs itself again as a child process whose environment
    /// holds them (the only way to put them into a process's environment without `unsafe`),
    /// and there checks what `env` sees when started like every helper, and that `ldd` does
    /// not inherit the environment either (an inherited `LD_PRELOAD` would add libm to its
    /// answer, as the control run shows).
    #[test]
    fn helpers_get_none_of_the_nodes_environment() {
        if std::env::var_os(CHILD).is_some() {
            assert_eq!(std::env::var("LANGO_PKCS11_PIN").as_deref(), Ok(PIN));
            let out = helper("env").output().unwrap();
            assert!(out.status.success());
            let seen = String::from_utf8_lossy(&out.stdout);
            assert!(!seen.contains(PIN), "{seen}");
            let names: Vec<&str> = seen
                .lines()
                .filter_map(|l| l.split_once('=').map(|(k, _)| k))
                .collect();
            assert_eq!(names, ["PATH"], "{seen}");
            let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
            assert!(
                !libs.iter().any(|l| l.to_string_lossy().contains("libm.so")),
                "ldd inherited LD_PRELOAD: {libs:?}"
            );
            return;
        }
        // Control: an ldd that inherits LD_PRELOAD lists the preloaded library.
        let control = Command::new("ldd")
            .arg("/bin/sh")
            .env("LD_PRELOAD", "libm.so.6")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&control.stdout).contains("libm.so"));

        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "container::image::tests::helpers_get_none_of_the_nodes_environment",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("LANGO_PKCS11_PIN", PIN)
            .env("AWS_SECRET_ACCESS_KEY", PIN)
            .env("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/creds.json")
            .env("AZURE_CLIENT_SECRET", PIN)
            .env("LD_PRELOAD", "libm.so.6")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
    }

    #[test]
    fn context_holds_worker_libraries_and_dockerfile() {
        let ctx = build_context(Path::new("/bin/sh")).unwrap();
        let mut a = tar::Archive::new(&ctx[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"Dockerfile".to_owned()));
        assert!(names.contains(&format!("rootfs{WORKER_IN_IMAGE}")));
        assert!(names.iter().any(|n| n.contains("libc.so")));
        assert!(
            names.contains(&"rootfs/tmp/".to_owned()) || names.contains(&"rootfs/tmp".to_owned())
        );
    }
}
