//! Proof-system costs per circuit (spec §5.5), for `cargo xtask bench`:
//! - `zkp/params_new/k`: deriving the public parameters for `k`;
//! - `zkp/keygen/<circuit>`: `keygen_vk` + `keygen_pk`;
//! - `zkp/prove/<circuit>` and `zkp/verify/<circuit>`: one proof, one verification
//!   (halo2's `multicore` feature: all cores);
//! - `zkp/prove_1thread/<circuit>`: the same proof on a one-thread rayon pool;
//! - `zkp/batch_verify16/<circuit>`: halo2's `BatchVerifier` over 16 distinct proofs (ownership
//!   and attestation, the two a node verifies in volume); per-proof time = median / 16;
//! - metric files: proof size in bytes per circuit, the parameter file size per `k`, and the
//!   peak resident memory while proving (VmHWM after resetting it through
//!   `/proc/self/clear_refs`, minus the resident size before).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::{
    hint::black_box,
    path::{Path, PathBuf},
    time::Duration,
};

use criterion::Criterion;
use halo2_proofs::{
    pasta::{EqAffine, Fp},
    plonk::{BatchVerifier, Circuit, keygen_pk, keygen_vk},
    poly::commitment::Params,
};
use lango_zkp::{
    CircuitId, IdentitySecret, ProverService, Witness,
    circuits::{Attestation, Balance, Capability, Ownership},
    params::{self, ParamsSource},
};
use serde_json::json;

fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("criterion")
}

fn write_metric(file: &str, metric: &str, value: f64, unit: &str, note: &str) {
    let dir = criterion_dir().join("zkp");
    let body = json!({ "metric": metric, "value": value, "unit": unit, "note": note });
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(file), body.to_string());
    }
}

fn witness(id: CircuitId) -> Witness {
    lango_zkp::testing::example_witness(id, IdentitySecret::generate().unwrap())
}

fn keygen<C: Circuit<Fp> + Default>(p: &Params<EqAffine>) {
    let c = C::default();
    let vk = keygen_vk(p, &c).unwrap();
    black_box(keygen_pk(p, vk, &c).unwrap());
}

/// `VmRSS` and `VmHWM` of this process, in KiB (Linux).
fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Peak extra resident memory of `f`, in KiB: resets the high-water mark first.
fn peak_extra_kib(f: impl FnOnce()) -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    let (before, _) = rss_kib()?;
    f();
    let (_, peak) = rss_kib()?;
    Some(peak.saturating_sub(before))
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    let mut g = c.benchmark_group("zkp");
    for (k, _) in params::PINNED {
        g.bench_function(format!("params_new/{k}"), |b| {
            b.iter(|| black_box(Params::<EqAffine>::new(*k)))
        });
        let size = params::to_bytes(&Params::<EqAffine>::new(*k)).len();
        write_metric(
            &format!("params_k{k}_bytes.json"),
            &format!("zkp/params_k{k}_bytes"),
            size as f64,
            "B",
            "serialised parameters",
        );
    }
    let p7 = Params::<EqAffine>::new(7);
    let p11 = Params::<EqAffine>::new(11);
    g.bench_function("keygen/wallet_ownership_v2", |b| {
        b.iter(|| keygen::<Ownership>(&p7))
    });
    g.bench_function("keygen/response_attestation_v2", |b| {
        b.iter(|| keygen::<Attestation>(&p11))
    });
    g.bench_function("keygen/agent_capability_v2", |b| {
        b.iter(|| keygen::<Capability>(&p11))
    });
    g.bench_function("keygen/balance_range_v2", |b| {
        b.iter(|| keygen::<Balance>(&p11))
    });

    let service = ProverService::new(ParamsSource::Memory);
    for id in CircuitId::ALL {
        service.compile(id).unwrap();
        let name = id.as_str().replace('/', "_");
        let w = witness(id);
        let public = w.public_inputs().unwrap();
        g.bench_function(format!("prove/{name}"), |b| {
            b.iter(|| black_box(service.prove(&w).unwrap()))
        });
        let proof = service.prove(&w).unwrap();
        assert!(service.verify(&proof, &public).unwrap());
        g.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| assert!(service.verify(&proof, &public).unwrap()))
        });
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        g.bench_function(format!("prove_1thread/{name}"), |b| {
            b.iter(|| one_thread.install(|| black_box(service.prove(&w).unwrap())))
        });
        if let Some(kib) = peak_extra_kib(|| {
            black_box(service.prove(&w).unwrap());
        }) {
            write_metric(
                &format!("{name}_prove_peak_rss_kib.json"),
                &format!("zkp/{name}/prove_peak_extra_rss"),
                kib as f64,
                "KiB",
                "resident memory added at the peak of one proof (all threads)",
            );
        }
        if matches!(
            id,
            CircuitId::WalletOwnershipV2 | CircuitId::ResponseAttestationV2
        ) {
            let p = if id.k() == 7 { &p7 } else { &p11 };
            let vk = match id {
                CircuitId::WalletOwnershipV2 => keygen_vk(p, &Ownership::default()),
                _ => keygen_vk(p, &Attestation::default()),
            }
            .unwrap();
            let batch: Vec<(Vec<u8>, Vec<Fp>)> = (0..16)
                .map(|_| {
                    let w = witness(id);
                    let public = w.public_inputs().unwrap();
                    (service.prove(&w).unwrap().data, public)
                })
                .collect();
            g.bench_function(format!("batch_verify16/{name}"), |b| {
                b.iter(|| {
                    let mut v = BatchVerifier::new();
                    for (proof, public) in &batch {
                        v.add_proof(vec![vec![public.clone()]], proof.clone());
                    }
                    assert!(v.finalize(p, &vk));
                })
            });
        }
        eprintln!(
            "{id}: k = {}, proof {} bytes, {} public inputs",
            id.k(),
            proof.data.len(),
            public.len()
        );
        write_metric(
            &format!("{name}_proof_bytes.json"),
            &format!("zkp/{name}/proof_bytes"),
            proof.data.len() as f64,
            "B",
            &format!("k = {}, {} public inputs", id.k(), public.len()),
        );
    }
    g.finish();
    c.final_summary();
}
