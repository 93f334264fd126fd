//! `lango-node zkp circuits|params|prove|verify`: the proof system from the command line.
//! Parameters are cached under `<data-dir>/zkp/`; nothing here needs the vault.

use std::{path::Path, process::ExitCode, time::Instant};

use anyhow::{Context as _, Result, bail};
use lango_zkp::{
    CircuitId, DEFAULT_MAX_PROOF_BYTES, ProverService,
    inputs::{Inputs, MAX_INPUTS_BYTES},
    params::{self, Origin, ParamsSource},
    wire::ProofJson,
};
use serde_json::json;

use crate::{cli::ZkpCommand, context::Context, output};

/// Runs a `zkp` subcommand.
pub fn run(ctx: &Context, cmd: ZkpCommand) -> Result<ExitCode> {
    let cache = ctx.data_dir.join("zkp");
    match cmd {
        ZkpCommand::Circuits => circuits(ctx, &cache),
        ZkpCommand::Params { verify } => params_cmd(ctx, &cache, verify),
        ZkpCommand::Prove {
            circuit,
            inputs,
            out,
        } => prove(ctx, &cache, &circuit, &inputs, out.as_deref()),
        ZkpCommand::Verify {
            circuit,
            proof,
            inputs,
        } => verify(ctx, &cache, &circuit, &proof, inputs.as_deref()),
    }
}

fn parse_circuit(s: &str) -> Result<CircuitId> {
    Ok(s.parse::<CircuitId>()?)
}

fn read_bounded(path: &Path, max: usize, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("open {what} {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("read {what} {}", path.display()))?;
    if buf.len() > max {
        bail!("{what} {} is larger than {max} bytes", path.display());
    }
    Ok(buf)
}

/// A spinner on stderr while keys are generated (hidden with --json or when not a tty).
fn spinner(ctx: &Context, msg: &str) -> indicatif::ProgressBar {
    let target = if ctx.json {
        indicatif::ProgressDrawTarget::hidden()
    } else {
        indicatif::ProgressDrawTarget::stderr()
    };
    let pb = indicatif::ProgressBar::with_draw_target(None, target);
    pb.set_message(msg.to_owned());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

fn compile(ctx: &Context, service: &ProverService, id: CircuitId) -> Result<()> {
    let pb = spinner(ctx, &format!("generating keys for {id} (k = {})", id.k()));
    let r = service.compile(id);
    pb.finish_and_clear();
    Ok(r?)
}

fn circuits(ctx: &Context, cache: &Path) -> Result<ExitCode> {
    let service = ProverService::new(ParamsSource::Dir(cache.to_path_buf()));
    let mut rows = vec![vec![
        "CIRCUIT".to_owned(),
        "K".to_owned(),
        "PUBLIC INPUTS".to_owned(),
        "VK DIGEST".to_owned(),
    ]];
    let mut list = Vec::new();
    for id in CircuitId::ALL {
        compile(ctx, &service, id)?;
        let digest = service.vk_digest(id).map(hex::encode).unwrap_or_default();
        rows.push(vec![
            id.to_string(),
            id.k().to_string(),
            id.public_inputs().to_string(),
            digest.clone(),
        ]);
        list.push(json!({
            "circuitId": id.as_str(),
            "k": id.k(),
            "publicInputs": id.public_input_names(),
            "vkDigest": digest,
            "scheme": lango_zkp::SCHEME,
        }));
    }
    if ctx.json {
        output::json(&list)?;
    } else {
        output::table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn params_cmd(ctx: &Context, cache: &Path, verify_only: bool) -> Result<ExitCode> {
    let ks: Vec<u32> = params::PINNED.iter().map(|(k, _)| *k).collect();
    let pb = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::with_draw_target(
            Some(ks.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_prefix(if verify_only {
            "checking parameters"
        } else {
            "building parameters"
        });
        pb
    };
    let mut report = Vec::new();
    let mut bad = 0;
    for k in ks {
        pb.set_message(format!("k = {k}"));
        let file = params::path(cache, k);
        let started = Instant::now();
        let state = if verify_only {
            match std::fs::read(&file) {
                Ok(b) if Some(params::digest(&b)) == params::pinned(k) => "ok".to_owned(),
                Ok(_) => {
                    bad += 1;
                    "does not match the pinned digest".to_owned()
                }
                Err(e) => {
                    bad += 1;
                    format!("unreadable: {e}")
                }
            }
        } else {
            match params::load(&ParamsSource::Dir(cache.to_path_buf()), k)?.1 {
                Origin::Cached => "ok (cached)".to_owned(),
                Origin::Rebuilt {
                    reason,
                    written: true,
                } => format!("built ({reason})"),
                Origin::Rebuilt {
                    reason,
                    written: false,
                } => {
                    bad += 1;
                    format!("built in memory only, could not write ({reason})")
                }
                Origin::Generated => "generated".to_owned(),
            }
        };
        report.push(json!({
            "k": k,
            "file": file,
            "state": state,
            "digest": params::PINNED.iter().find(|(pk, _)| *pk == k).map(|(_, h)| *h),
            "ms": started.elapsed().as_millis() as u64,
        }));
        pb.inc(1);
    }
    pb.finish_and_clear();
    if ctx.json {
        output::json(&report)?;
    } else {
        for r in &report {
            output::line(format!(
                "k = {:<3} {}  {}",
                r["k"],
                r["file"].as_str().unwrap_or_default(),
                r["state"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn prove(
    ctx: &Context,
    cache: &Path,
    circuit: &str,
    inputs: &Path,
    out: Option<&Path>,
) -> Result<ExitCode> {
    let id = parse_circuit(circuit)?;
    let doc = Inputs::from_slice(&read_bounded(inputs, MAX_INPUTS_BYTES, "inputs")?)?;
    let witness = doc.witness(id)?;
    let service = ProverService::new(ParamsSource::Dir(cache.to_path_buf()));
    compile(ctx, &service, id)?;
    let started = Instant::now();
    let pb = spinner(ctx, &format!("proving {id}"));
    let proof = service.prove(&witness);
    pb.finish_and_clear();
    let proof = proof?;
    let ms = started.elapsed().as_millis();
    // The verifier needs the prover's identity commitment (normally from a signed binding).
    let id_row = id
        .public_input_names()
        .iter()
        .position(|n| *n == "idCommitment");
    let id_commitment = id_row
        .and_then(|i| proof.public_inputs.get(i))
        .map(|f| hex::encode(lango_zkp::encoding::fe_to_bytes(f)))
        .unwrap_or_default();
    let text = serde_json::to_string_pretty(&ProofJson::from(&proof))? + "\n";
    match out {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("write {}", p.display()))?;
            if ctx.json {
                output::json(
                    &json!({"circuitId": id.as_str(), "proofBytes": proof.data.len(), "ms": ms, "out": p, "idCommitment": id_commitment}),
                )?;
            } else {
                output::line(format!(
                    "Proved {id} in {ms} ms: {} bytes, written to {}.",
                    proof.data.len(),
                    p.display()
                ));
                output::line(format!("Identity commitment: {id_commitment}"));
            }
        }
        None => {
            print_raw(&text);
            output::note(format!(
                "Proved {id} in {ms} ms: {} bytes; identity commitment {id_commitment}.",
                proof.data.len()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
fn print_raw(s: &str) {
    print!("{s}");
}

fn verify(
    ctx: &Context,
    cache: &Path,
    circuit: &str,
    proof_file: &Path,
    inputs: Option<&Path>,
) -> Result<ExitCode> {
    let id = parse_circuit(circuit)?;
    let doc = ProofJson::from_slice(&read_bounded(
        proof_file,
        DEFAULT_MAX_PROOF_BYTES * 2,
        "proof",
    )?)?;
    let proof = doc.decode(DEFAULT_MAX_PROOF_BYTES)?;
    if proof.circuit != id {
        bail!(
            "{} holds a proof for {}, not {id}",
            proof_file.display(),
            proof.circuit
        );
    }
    let claimed_tag = proof.public_inputs.last().copied();
    let (public, source) = match inputs {
        Some(p) => {
            let tag = claimed_tag.context("the proof carries no tag (no public inputs)")?;
            let doc = Inputs::from_slice(&read_bounded(p, MAX_INPUTS_BYTES, "inputs")?)?;
            (doc.statement(id, tag)?, "your statement")
        }
        None => (
            proof.public_inputs.clone(),
            "the statement in the proof file",
        ),
    };
    let service = ProverService::new(ParamsSource::Dir(cache.to_path_buf()));
    compile(ctx, &service, id)?;
    let started = Instant::now();
    let ok = service.verify(&proof, &public)?;
    let ms = started.elapsed().as_millis();
    if ctx.json {
        output::json(
            &json!({"circuitId": id.as_str(), "verified": ok, "against": source, "ms": ms}),
        )?;
    }
    if ok {
        if !ctx.json {
            output::line(format!(
                "Proof verifies: {id}, checked against {source} in {ms} ms."
            ));
            if inputs.is_none() {
                output::note(
                    "note: this only shows the proof is consistent with what it claims; pass --inputs with your own statement to check what it proves.",
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    } else {
        let why = match proof.differs_at(&public) {
            Some(name) => format!(" (its public input {name} differs from {source})"),
            None => String::new(),
        };
        bail!("the proof does not verify for {id} against {source}{why}")
    }
}
