//! Issue 17, the sandbox under a real adversary: two `lango-node serve` processes on
//! 127.0.0.1, run as whatever user the tests run as (root in CI, as in most containers). A
//! peer calls a fork bomb on the other node through `p2p invoke`; from outside we count the
//! processes of every sandbox uid and keep forking from the host the whole time. A call that
//! outlasts the admin socket's own deadline reports the remote node's timeout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::{
    collections::HashMap,
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lango_e2e::{Node, component, stderr, stdout};

fn run(n: &Node, args: &[&str]) -> Output {
    n.cmd().args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    stdout(o)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        == Some("0")
}

/// A shell fork bomb, bounded at 1,500 processes so that a broken defence still leaves the
/// test machine usable (an unbounded one filled a host's process table).
const BOMB: &str = "[p2p.toolIsolation]\ntimeoutPerTool = \"6s\"\nmaxProcesses = 16\n\
[[p2p.toolIsolation.commandTools]]\nname = \"bomb\"\ndescription = \"fork bomb\"\n\
program = \"/bin/sh\"\nargs = [\"-c\", \"i=0; while [ $i -lt 1500 ]; do (sleep 30) 2>/dev/null & i=$((i+1)); done; wait\"]\n";

/// Real uid of each process on the host, without bubblewrap's supervisors.
fn sandbox_uid_counts() -> HashMap<u32, usize> {
    let range = lango_sandbox::UidRange::DEFAULT;
    let mut counts = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .map(str::trim)
            .unwrap_or("");
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX);
        if name != "bwrap" && (range.first..range.first + range.count).contains(&uid) {
            *counts.entry(uid).or_default() += 1;
        }
    }
    counts
}

#[test]
fn a_fork_bomb_called_by_a_peer_is_capped_and_the_host_keeps_forking() {
    if !component::bubblewrap("a_fork_bomb_called_by_a_peer_is_capped_and_the_host_keeps_forking") {
        return;
    }
    let a = Node::for_serve("", "");
    let b = Node::for_serve(
        "approvalPolicy = \"allow-listed\"\napprovedTools = [\"bomb\"]\n",
        BOMB,
    );
    let sa = a.serve();
    let sb = b.serve();
    ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    ok(&run(
        &b,
        &[
            "p2p",
            "firewall",
            "add",
            "--peer-did",
            sa.did(),
            "--tools",
            "bomb",
        ],
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut peaks = HashMap::<u32, usize>::new();
        while !s.load(Ordering::Relaxed) {
            for (uid, n) in sandbox_uid_counts() {
                let e = peaks.entry(uid).or_default();
                *e = (*e).max(n);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        peaks
    });
    let s = stop.clone();
    let forker = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, 0u32);
        while !s.load(Ordering::Relaxed) {
            match std::process::Command::new("/bin/true").status() {
                Ok(st) if st.success() => ok += 1,
                _ => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (ok, failed)
    });
    let started = Instant::now();
    let call = run(
        &a,
        &["p2p", "invoke", sb.peer_id(), "bomb", "--params", "{}"],
    );
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peaks = sampler.join().unwrap();
    let (forks_ok, forks_failed) = forker.join().unwrap();
    eprintln!(
        "bomb via p2p invoke: {took:?}, peak processes per sandbox uid {peaks:?}, host forks \
         {forks_ok} ok / {forks_failed} failed"
    );
    assert!(!call.status.success(), "the bomb returned success");
    let err = stderr(&call);
    assert!(
        err.contains("timed out") || err.contains("resource limits"),
        "{err}"
    );
    assert_eq!(forks_failed, 0, "the host could not fork during the bomb");
    assert!(forks_ok > 100, "the host forked only {forks_ok} times");
    if is_root() {
        let worst = peaks.values().copied().max().unwrap_or(0);
        assert!(
            worst >= 10,
            "the bomb was never seen running as a sandbox uid: {peaks:?}"
        );
        assert!(
            worst <= 16,
            "one call held {worst} processes (maxProcesses = 16): {peaks:?}"
        );
    } else {
        eprintln!("not root: the per-uid count applies to root nodes only");
    }
    // The node still serves: B's own CLI answers.
    ok(&run(&b, &["p2p", "status"]));
}

#[test]
fn a_call_longer_than_the_admin_socket_deadline_reports_the_remote_timeout() {
    if !component::bubblewrap(
        "a_call_longer_than_the_admin_socket_deadline_reports_the_remote_timeout",
    ) {
        return;
    }
    let a = Node::for_serve("", "");
    let b = Node::for_serve(
        "approvalPolicy = \"allow-listed\"\napprovedTools = [\"slow\"]\n",
        "[p2p.toolIsolation]\ntimeoutPerTool = \"33s\"\n\
         [[p2p.toolIsolation.commandTools]]\nname = \"slow\"\ndescription = \"sleeps\"\n\
         program = \"/bin/sleep\"\nargs = [\"120\"]\n",
    );
    let sa = a.serve();
    let sb = b.serve();
    ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    ok(&run(
        &b,
        &[
            "p2p",
            "firewall",
            "add",
            "--peer-did",
            sa.did(),
            "--tools",
            "slow",
        ],
    ));
    let started = Instant::now();
    let call = run(
        &a,
        &["p2p", "invoke", sb.peer_id(), "slow", "--params", "{}"],
    );
    let took = started.elapsed();
    assert!(!call.status.success());
    let err = stderr(&call);
    assert!(!err.contains("admin socket"), "{err}");
    assert!(err.contains("timed out after 33s"), "{err}");
    assert!(took >= Duration::from_secs(33), "{took:?}");
}
