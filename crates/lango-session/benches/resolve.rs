//! Token resolution with 1 000 000 live sessions (`cargo xtask bench resolve`).
//!
//! - `session_resolve_1m/resolve`: `SessionStore::resolve(token, peer_id)` of a random live
//!   session (the A2A hot path, T-1) — criterion throughput.
//! - Tail latency: after criterion, 200 000 individual resolves of random sessions, each
//!   timed with `Instant`, sorted; p50, p99 and p99.9 are printed and written as metric files
//!   (`<criterion dir>/session_resolve_1m/p50.json`, `p99.json`, `p999.json`) for
//!   `cargo xtask bench`. The figures include the `Instant::now()` pair around each call.
//!
//! The store (about 1 M sessions, a few hundred MB) is built only when the benchmark is
//! selected.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{Criterion, Throughput};
use lango_session::{NewSession, Role, SessionConfig, SessionStore};

const SESSIONS: usize = 1_000_000;
const SAMPLES: usize = 200_000;

struct Fixture {
    store: SessionStore,
    /// `(token, peer ID)` of every session.
    keys: Vec<(String, String)>,
}

fn fixture() -> Fixture {
    let t = Instant::now();
    let store = SessionStore::builder(&SessionConfig::default())
        .max_sessions(SESSIONS)
        .build()
        .unwrap();
    let mut keys = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let did = format!("did:lango:02{i:064x}");
        // 52 characters, like an Ed25519 peer ID.
        let peer_id = format!("12D3KooW{i:044}");
        let issued = store
            .create(NewSession {
                peer_did: &did,
                peer_id: &peer_id,
                protocol: "/lango/handshake/1.2.0-bound",
                role: Role::Responder,
                authenticated: true,
                channel_bound: true,
                zk_verified: false,
                remote_ip: None,
            })
            .unwrap();
        keys.push((issued.token.expose().to_owned(), peer_id));
    }
    assert_eq!(store.len(), SESSIONS);
    eprintln!(
        "session_resolve_1m: {SESSIONS} sessions created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Fixture { store, keys }
}

/// A cheap pseudo-random index sequence (xorshift), so lookups do not follow insertion order.
struct Picker(u64);

impl Picker {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Where criterion writes its results (criterion's own rule; from the bench executable,
/// `<target>/release/deps/<bench>`, when neither variable is set).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|t| t.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Writes one metric file for `cargo xtask bench` (format documented in xtask/src/bench.rs).
fn write_metric(dir: &Path, file: &str, metric: &str, value: f64, unit: &str, note: &str) {
    let body = serde_json::json!({ "metric": metric, "value": value, "unit": unit, "note": note });
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join(file), body.to_string());
    }
}

fn tail_latency(f: &Fixture) {
    let mut pick = Picker(0x2545_f491_4f6c_dd1d);
    // Warm the path (and the CPU caches) a little first.
    for _ in 0..10_000 {
        let (tok, peer) = &f.keys[pick.next(SESSIONS)];
        black_box(f.store.resolve(tok, peer).unwrap());
    }
    let mut ns: Vec<u64> = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let (tok, peer) = &f.keys[pick.next(SESSIONS)];
        let t = Instant::now();
        let r = f.store.resolve(black_box(tok), black_box(peer));
        let d = t.elapsed();
        black_box(r.unwrap());
        ns.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
    ns.sort_unstable();
    let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)] as f64;
    let (p50, p99, p999, max) = (q(0.50), q(0.99), q(0.999), ns[ns.len() - 1] as f64);
    eprintln!(
        "session_resolve_1m latency over {SAMPLES} resolves: p50 {p50:.0} ns, p99 {p99:.0} ns, \
         p99.9 {p999:.0} ns, max {max:.0} ns"
    );
    let dir = criterion_dir().join("session_resolve_1m");
    let note = format!("{SAMPLES} individually timed resolves, {SESSIONS} live sessions");
    for (file, name, v) in [
        ("p50.json", "session_resolve_1m/p50", p50),
        ("p99.json", "session_resolve_1m/p99", p99),
        ("p999.json", "session_resolve_1m/p99.9", p999),
    ] {
        write_metric(&dir, file, name, v, "ns", &note);
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut fx: Option<Fixture> = None;
    {
        let mut g = c.benchmark_group("session_resolve_1m");
        g.throughput(Throughput::Elements(1));
        g.bench_function("resolve", |b| {
            let f = fx.get_or_insert_with(fixture);
            let mut pick = Picker(0x9e37_79b9_7f4a_7c15);
            b.iter(|| {
                let (tok, peer) = &f.keys[pick.next(SESSIONS)];
                f.store.resolve(black_box(tok), black_box(peer)).unwrap()
            })
        });
        g.finish();
    }
    c.final_summary();
    // Only when criterion ran the benchmark (the store exists).
    if let Some(f) = &fx {
        tail_latency(f);
    }
}
