//! `lango-sandbox-worker`: the minimal worker binary the subprocess executor and the container
//! image run. It has the built-in tools (`sandbox_echo`) and runs operator-configured command
//! tools on the parent's behalf; it reads no configuration and touches no secrets.
//!
//! Started any other way than with exactly `--sandbox-worker` it explains itself and exits 2.
use std::io::Write;

fn main() {
    if lango_sandbox::worker::is_worker_invocation() {
        lango_sandbox::worker::main(&lango_sandbox::ToolRegistry::builtin());
    }
    let _ = writeln!(
        std::io::stderr(),
        "lango-sandbox-worker runs one sandboxed tool call for lango-node; it is started as \
         `lango-sandbox-worker --sandbox-worker` with the request on stdin, never by hand."
    );
    std::process::exit(2);
}
