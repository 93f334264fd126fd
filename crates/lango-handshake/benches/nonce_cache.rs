//! Nonce replay cache throughput and memory (`cargo xtask bench nonce_cache`).
//!
//! - `nonce_cache/fresh`: `check_and_record` of nonces never seen, into a cache with the
//!   default capacity (100 000) and the wired TTL that already holds 50 000 entries. Each
//!   timed run of up to 50 000 inserts gets a new pre-filled cache (untimed), so the cache
//!   stays between half full and full and never refuses.
//! - `nonce_cache/duplicate`: `check_and_record` of nonces already recorded (a replay), in a
//!   full cache.
//! - `nonce_cache/full_reject`: a fresh nonce offered to a cache full of unexpired entries
//!   (`NonceCheck::Full`, the O(1) refusal path of N-6).
//!
//! Memory: a counting global allocator measures the heap growth of inserting 100 000 entries
//! into an empty cache; bytes per entry = growth / 100 000 (the peak during the inserts is
//! reported too). Printed, and written as metric files
//! (`<criterion dir>/nonce_cache/bytes_per_entry.json`, `peak_bytes_per_entry.json`) for
//! `cargo xtask bench`.
// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(
    unsafe_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use lango_handshake::clock::{Clock, SystemClock};
use lango_handshake::nonce::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_NONCE_CACHE_CAPACITY, NonceCache, NonceCheck,
    wired_nonce_ttl,
};

/// Forwards to the system allocator and keeps the live heap size and its peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ENTRIES: usize = 100_000;
const PREFILL: usize = DEFAULT_NONCE_CACHE_CAPACITY / 2;

/// The `i`-th distinct nonce of stream `stream` (cheap, and distinct across streams).
fn nonce(stream: u64, i: u64) -> [u8; 32] {
    let mut n = [0x5au8; 32];
    n[..8].copy_from_slice(&i.to_le_bytes());
    n[8..16].copy_from_slice(&stream.to_le_bytes());
    // Spread the bits a little so the keys do not share long prefixes.
    n[16..24].copy_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    n
}

fn cache() -> NonceCache {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    NonceCache::with_clock(
        wired_nonce_ttl(DEFAULT_HANDSHAKE_TIMEOUT),
        DEFAULT_NONCE_CACHE_CAPACITY,
        clock,
    )
}

fn filled(stream: u64, n: usize) -> NonceCache {
    let c = cache();
    for i in 0..n as u64 {
        assert_eq!(c.check_and_record(&nonce(stream, i)), NonceCheck::Fresh);
    }
    c
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("nonce_cache");
    g.throughput(Throughput::Elements(1));

    let mut stream = 1u64;
    g.bench_function("fresh", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let run = left.min(PREFILL as u64);
                stream += 1;
                let cache = filled(stream, PREFILL);
                let batch: Vec<[u8; 32]> = (0..run)
                    .map(|i| nonce(stream, PREFILL as u64 + i))
                    .collect();
                let t = Instant::now();
                for n in &batch {
                    black_box(cache.check_and_record(black_box(n)));
                }
                total += t.elapsed();
                left -= run;
            }
            total
        })
    });

    let mut full = None;
    g.bench_function("duplicate", |b| {
        let cache = full.get_or_insert_with(|| filled(0, DEFAULT_NONCE_CACHE_CAPACITY));
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 7_919) % DEFAULT_NONCE_CACHE_CAPACITY as u64;
            let r = cache.check_and_record(black_box(&nonce(0, i)));
            debug_assert_eq!(r, NonceCheck::Seen);
            r
        })
    });
    g.bench_function("full_reject", |b| {
        let cache = full.get_or_insert_with(|| filled(0, DEFAULT_NONCE_CACHE_CAPACITY));
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let r = cache.check_and_record(black_box(&nonce(u64::MAX, i)));
            debug_assert_eq!(r, NonceCheck::Full);
            r
        })
    });
    g.finish();
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

/// Heap growth per entry of a cache holding `ENTRIES` nonces.
fn memory() {
    let nonces: Vec<[u8; 32]> = (0..ENTRIES as u64).map(|i| nonce(9, i)).collect();
    let cache = cache();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    for n in &nonces {
        assert_eq!(cache.check_and_record(n), NonceCheck::Fresh);
    }
    let after = LIVE.load(Ordering::Relaxed);
    let peak = PEAK.load(Ordering::Relaxed);
    assert_eq!(cache.len(), ENTRIES);
    let per_entry = after.saturating_sub(before) as f64 / ENTRIES as f64;
    let peak_per_entry = peak.saturating_sub(before) as f64 / ENTRIES as f64;
    eprintln!(
        "nonce_cache memory: {per_entry:.1} bytes/entry after {ENTRIES} inserts \
         ({:.2} MiB), peak during the inserts {peak_per_entry:.1} bytes/entry",
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0)
    );
    let dir = criterion_dir().join("nonce_cache");
    let note = format!("heap growth of a NonceCache after {ENTRIES} inserts / {ENTRIES}");
    write_metric(
        &dir,
        "bytes_per_entry.json",
        "nonce_cache/bytes_per_entry",
        per_entry,
        "B",
        &note,
    );
    write_metric(
        &dir,
        "peak_bytes_per_entry.json",
        "nonce_cache/peak_bytes_per_entry",
        peak_per_entry,
        "B",
        "peak heap growth while inserting, per entry",
    );
    drop(cache);
}

/// Whether the command line's filter (if any) selects a benchmark named `id`. Criterion
/// filters by regular expression; a plain substring test is enough for the names used here.
fn selected(id: &str) -> bool {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    match args.next() {
        None => true,
        Some(f) => id.contains(&f),
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    c.final_summary();
    if selected("nonce_cache/bytes_per_entry") {
        memory();
    }
}
