//! Parameters (spec §5.4.3): the generated digests equal the pinned ones, the file cache is
//! written 0600 with its digest, loaded again without regenerating, a corrupted file is
//! refused and rebuilt, and an unwritable directory still works from memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;

use halo2_proofs::{pasta::EqAffine, poly::commitment::Params};
use lango_zkp::params::{self, Origin, ParamsSource};

#[test]
fn generated_parameters_match_the_pinned_digests() {
    for (k, hex) in params::PINNED {
        let got = hex::encode(params::digest(&params::to_bytes(&Params::<EqAffine>::new(
            *k,
        ))));
        assert_eq!(&got, hex, "k = {k}");
    }
}

#[test]
fn the_file_cache_is_written_checked_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("zkp");
    let src = ParamsSource::Dir(cache.clone());
    let (p1, o1) = params::load(&src, 7).unwrap();
    assert!(
        matches!(o1, Origin::Rebuilt { written: true, .. }),
        "{o1:?}"
    );
    let file = params::path(&cache, 7);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let sidecar = std::fs::read_to_string(cache.join("params-k7.bin.blake2b")).unwrap();
    assert_eq!(sidecar.trim(), params::PINNED[0].1);

    let (p2, o2) = params::load(&src, 7).unwrap();
    assert_eq!(o2, Origin::Cached);
    assert_eq!(params::to_bytes(&p1), params::to_bytes(&p2));

    // One flipped byte (say, a generator replaced): refused, rebuilt, rewritten.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let (p3, o3) = params::load(&src, 7).unwrap();
    match o3 {
        Origin::Rebuilt { reason, written } => {
            assert!(
                reason.contains("does not match the pinned digest"),
                "{reason}"
            );
            assert!(written);
        }
        o => panic!("a corrupted file was used: {o:?}"),
    }
    assert_eq!(params::to_bytes(&p3), params::to_bytes(&p1));
    assert_eq!(params::load(&src, 7).unwrap().1, Origin::Cached);
}

#[test]
fn an_unwritable_directory_keeps_parameters_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A plain file where the directory should be: nothing can be created below it.
    let blocked = dir.path().join("zkp");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let (p, o) = params::load(&ParamsSource::Dir(blocked), 7).unwrap();
    assert!(matches!(o, Origin::Rebuilt { written: false, .. }), "{o:?}");
    assert_eq!(p.k(), 7);
    assert!(
        params::load(&ParamsSource::Dir(dir.path().into()), 5).is_err(),
        "no pinned digest for k = 5"
    );
}

#[test]
fn a_path_pattern_names_one_file_per_k() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = format!("{}/srs/k{{k}}.params", dir.path().display());
    let src = ParamsSource::Pattern(pattern);
    let (_, o) = params::load(&src, 7).unwrap();
    assert!(matches!(o, Origin::Rebuilt { written: true, .. }), "{o:?}");
    assert!(dir.path().join("srs/k7.params").is_file());
    assert!(dir.path().join("srs/k7.params.blake2b").is_file());
    assert_eq!(params::load(&src, 7).unwrap().1, Origin::Cached);
}
