//! A sandbox worker with the adversarial test tools (test-only).
fn main() {
    if lango_sandbox::worker::is_worker_invocation() {
        lango_sandbox::worker::main(&lango_sandbox_adversarial::registry());
    }
    std::process::exit(2);
}
