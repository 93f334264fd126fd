//! The sandbox as operators see it (protocol spec §5.1–5.3, T-J1–T-J3, T-G17 for the node
//! binary): `p2p sandbox status|test|cleanup` with the default configuration, with isolation
//! off, with an unavailable container runtime, against a running node, and the config
//! rejections of §2.3.2 / R-2.1 / R-2.6.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::Write,
    process::{Output, Stdio},
};

use lango_e2e::{Node, component, node_bin, stderr, stdout};
use serde_json::Value;

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    stdout(o)
}

fn with_config(toml: &str) -> Node {
    let n = Node::new();
    std::fs::write(n.data_dir().join("config.toml"), toml).unwrap();
    n
}

#[test]
fn default_status_explains_the_subprocess_sandbox() {
    if !component::bubblewrap("default_status_explains_the_subprocess_sandbox") {
        return;
    }
    let n = Node::new();
    let out = ok(&n.run(&["p2p", "sandbox", "status"]));
    let lines: Vec<&str> = out.lines().collect();
    // The reference lines, byte for byte.
    assert_eq!(
        lines[..4],
        [
            "Tool isolation: enabled",
            "  Timeout per tool: 30s",
            "  Max memory (MB):  256",
            "  Container mode:   disabled (subprocess fallback)",
        ],
        "{out}"
    );
    // Then the additions: the effective isolation and why.
    assert_eq!(lines[4], "  Require container: true");
    assert!(
        lines[5].starts_with("  Effective isolation: subprocess(namespaces+landlock+seccomp"),
        "{out}"
    );
    assert_eq!(lines[6], "  Worker tools:     1 registered");
    assert!(
        out.contains("  user namespaces:  yes (bubblewrap /usr/bin/bwrap)"),
        "{out}"
    );
    assert!(
        out.contains("  Source:           probe (no node running)"),
        "{out}"
    );

    let v: Value =
        serde_json::from_str(&ok(&n.run(&["--json", "p2p", "sandbox", "status"]))).unwrap();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["containerMode"], false);
    assert_eq!(v["workerTools"], serde_json::json!(["sandbox_echo"]));
    assert!(
        v["effectiveIsolation"]
            .as_str()
            .unwrap()
            .starts_with("subprocess(namespaces")
    );
}

#[test]
fn sandbox_test_passes_with_the_default_configuration() {
    if !component::bubblewrap("sandbox_test_passes_with_the_default_configuration") {
        return;
    }
    let n = Node::new();
    let out = ok(&n.run(&["p2p", "sandbox", "test"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Using subprocess sandbox", "{out}");
    assert_eq!(
        lines[1],
        r#"Smoke test passed: {"msg":"sandbox-smoke-test"}"#
    );
    assert!(
        lines[2].starts_with("  Isolation: subprocess(namespaces"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("  Took:      ") && lines[3].ends_with(" ms"),
        "{out}"
    );
    let v: Value =
        serde_json::from_str(&ok(&n.run(&["--json", "p2p", "sandbox", "test"]))).unwrap();
    assert_eq!(v["output"]["msg"], "sandbox-smoke-test");
    let iso = ok(&n.run(&["p2p", "sandbox", "test", "--isolation"]));
    let checks: Vec<&str> = iso.lines().skip(4).collect();
    assert_eq!(checks.len(), 7, "{iso}");
    for check in [
        "empty environment",
        "private workdir",
        "network denied",
        "write outside workdir denied",
        "parent /proc not visible",
        "memory limit enforced",
        "process limit enforced",
    ] {
        assert!(checks.contains(&format!("PASS {check}").as_str()), "{iso}");
    }
    assert!(v["millis"].as_f64().unwrap() > 0.0);
}

#[test]
fn isolation_off_is_reported_and_test_refuses() {
    let n = with_config("[p2p.toolIsolation]\nenabled = false\n");
    let out = ok(&n.run(&["p2p", "sandbox", "status"]));
    assert_eq!(out.lines().next(), Some("Tool isolation: disabled"));
    let t = n.run(&["p2p", "sandbox", "test"]);
    assert!(!t.status.success());
    assert!(
        stderr(&t).contains("tool isolation is not enabled (set p2p.toolIsolation.enabled = true)"),
        "{}",
        stderr(&t)
    );
    assert!(stdout(&t).is_empty());
}

#[test]
fn an_unavailable_requested_runtime_is_an_error_not_a_fallback() {
    let n = with_config("[p2p.toolIsolation.container]\nenabled = true\nruntime = \"docker\"\n");
    let dead = n.data_dir().join("no-docker.sock");
    let run = |args: &[&str]| {
        n.cmd()
            .env("DOCKER_HOST", format!("unix://{}", dead.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let out = ok(&run(&["p2p", "sandbox", "status"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..8],
        [
            "Tool isolation: enabled",
            "  Timeout per tool: 30s",
            "  Max memory (MB):  256",
            "  Container mode:   enabled",
            "  Runtime config:   docker",
            "  Image:            lango-sandbox:latest",
            "  Network mode:     none",
            "  Active runtime:   unavailable (docker runtime requested but unavailable: container runtime unavailable)",
        ],
        "{out}"
    );
    assert!(
        out.contains("  Effective isolation: none (remote tool calls refused)"),
        "{out}"
    );
    assert!(out.contains("  Skipped runtime:  docker: "), "{out}");
    let t = run(&["p2p", "sandbox", "test"]);
    assert!(!t.status.success());
    assert!(
        stderr(&t).contains("docker runtime requested but unavailable"),
        "{}",
        stderr(&t)
    );
    let c = run(&["p2p", "sandbox", "cleanup"]);
    assert!(!c.status.success());
    assert!(stdout(&c).is_empty(), "no success text: {}", stdout(&c));
}

#[test]
fn unsafe_container_settings_are_rejected_at_load() {
    for (toml, key) in [
        (
            "[p2p.toolIsolation.container]\nuser = \"0\"\n",
            "p2p.toolIsolation.container.user",
        ),
        (
            "[p2p.toolIsolation.container]\nuser = \"root\"\n",
            "p2p.toolIsolation.container.user",
        ),
        (
            "[p2p.toolIsolation.container]\nnetworkMode = \"host\"\n",
            "p2p.toolIsolation.container.networkMode",
        ),
        (
            "[p2p.toolIsolation.container]\nnetworkMode = \"\"\n",
            "p2p.toolIsolation.container.networkMode",
        ),
        (
            "[p2p.toolIsolation.container]\nruntime = \"kata\"\n",
            "p2p.toolIsolation.container.runtime",
        ),
        (
            "[p2p.toolIsolation.container]\nenabled = true\nruntime = \"native\"\n",
            "p2p.toolIsolation.container.runtime",
        ),
        (
            "[[p2p.toolIsolation.commandTools]]\nname = \"t\"\nprogram = \"relative/tool\"\n",
            "p2p.toolIsolation.commandTools",
        ),
    ] {
        let n = with_config(toml);
        let o = n.run(&["p2p", "sandbox", "status"]);
        assert!(!o.status.success(), "accepted: {toml}");
        assert!(stderr(&o).contains(key), "{toml}: {}", stderr(&o));
    }
}

#[test]
fn a_running_node_reports_its_own_sandbox_with_command_tools() {
    if !component::bubblewrap("a_running_node_reports_its_own_sandbox_with_command_tools") {
        return;
    }
    let n = Node::for_serve(
        "",
        "[[p2p.toolIsolation.commandTools]]\nname = \"json_cat\"\ndescription = \"echo\"\n\
         program = \"/bin/sh\"\nargs = [\"-c\", \"cat\"]\n",
    );
    let _s = n.serve();
    let out = ok(&n.run(&["p2p", "sandbox", "status"]));
    assert!(out.contains("  Worker tools:     2 registered"), "{out}");
    assert!(out.contains("  Source:           running node"), "{out}");
    let v: Value =
        serde_json::from_str(&ok(&n.run(&["--json", "p2p", "sandbox", "status"]))).unwrap();
    assert_eq!(
        v["workerTools"],
        serde_json::json!(["json_cat", "sandbox_echo"])
    );
}

#[test]
fn worker_mode_needs_exactly_the_flag() {
    // Anywhere else the flag is an ordinary (unknown) argument for the CLI.
    let n = Node::new();
    let loose = n.run(&["config", "show", "--sandbox-worker"]);
    assert_eq!(loose.status.code(), Some(2), "{}", stderr(&loose));
    let mut child = std::process::Command::new(node_bin())
        .arg("--sandbox-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"].as_str().unwrap().starts_with("decode request"),
        "{v}"
    );
    let echo = {
        let mut c = std::process::Command::new(node_bin())
            .arg("--sandbox-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(br#"{"toolName":"sandbox_echo","params":{"a":1}}"#)
            .unwrap();
        c.wait_with_output().unwrap()
    };
    assert_eq!(echo.status.code(), Some(0));
    assert_eq!(stdout(&echo), "{\"output\":{\"a\":1}}\n");
}
