//! The prover service (spec §3.12): keys generated once per circuit and cached, proving and
//! verifying with typed errors, a bounded pool for async callers.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use halo2_proofs::{
    pasta::{EqAffine, Fp},
    plonk::{self, Circuit, ProvingKey, SingleVerifier, VerifyingKey},
    poly::commitment::Params,
    transcript::{Blake2bRead, Blake2bWrite, Challenge255},
};
use rand::rand_core::UnwrapErr;

use crate::{
    CircuitId, Error, Witness,
    circuits::{Attestation, Balance, Capability, Ownership, Private},
    params::{self, Origin, ParamsSource},
};

/// The proving scheme's wire name.
pub const SCHEME: &str = "halo2-ipa-pasta";

/// Largest proof accepted by default (`maxProofBytes`); the v2 proofs are a few KiB.
pub const DEFAULT_MAX_PROOF_BYTES: usize = 16 * 1024;

impl Proof {
    /// The first public input where the prover's claimed statement differs from `public`
    /// (the verifier's): a diagnostic for a failed verification, never a reason to accept.
    pub fn differs_at(&self, public: &[Fp]) -> Option<&'static str> {
        if self.public_inputs.len() != public.len() {
            return None;
        }
        (0..public.len())
            .find(|i| self.public_inputs[*i] != public[*i])
            .and_then(|i| self.circuit.public_input_names().get(i).copied())
    }
}

/// A proof and what it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The circuit.
    pub circuit: CircuitId,
    /// Always [`SCHEME`] for proofs made here; anything else is refused on verification.
    pub scheme: String,
    /// The Blake2b transcript.
    pub data: Vec<u8>,
    /// The prover's public inputs: informational only; verifiers use their own (W-8).
    pub public_inputs: Vec<Fp>,
    /// The prover's verifying-key digest.
    pub vk_digest: Option<[u8; 32]>,
}

struct Keys {
    params: Arc<Params<EqAffine>>,
    vk: VerifyingKey<EqAffine>,
    pk: ProvingKey<EqAffine>,
    digest: [u8; 32],
}

/// Key generation, proving and verification for the four circuits. All methods take
/// `&self`; share it in an `Arc`.
pub struct ProverService {
    source: ParamsSource,
    params: Mutex<HashMap<u32, Arc<Params<EqAffine>>>>,
    origins: Mutex<HashMap<u32, Origin>>,
    keys: [OnceLock<Arc<Keys>>; 4],
    compiling: [Mutex<()>; 4],
    keygens: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    max_proof_bytes: usize,
    pool: Arc<tokio::sync::Semaphore>,
}

fn slot(id: CircuitId) -> usize {
    match id {
        CircuitId::WalletOwnershipV2 => 0,
        CircuitId::ResponseAttestationV2 => 1,
        CircuitId::AgentCapabilityV2 => 2,
        CircuitId::BalanceRangeV2 => 3,
    }
}

impl std::fmt::Debug for ProverService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProverService")
            .field("source", &self.source)
            .field(
                "compiled",
                &CircuitId::ALL
                    .iter()
                    .filter(|c| self.is_compiled(**c))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ProverService {
    /// A service reading parameters from `source`; nothing is generated until a circuit is
    /// compiled. Async callers may run two proofs at once (see [`Self::with_pool`]).
    pub fn new(source: ParamsSource) -> Self {
        Self::with_pool(source, 2)
    }

    /// As [`Self::new`] with at most `max_concurrent` proofs or verifications at once on the
    /// blocking pool (`maxConcurrentProofs`).
    pub fn with_pool(source: ParamsSource, max_concurrent: usize) -> Self {
        Self {
            source,
            params: Mutex::default(),
            origins: Mutex::default(),
            keys: Default::default(),
            compiling: Default::default(),
            keygens: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            max_proof_bytes: DEFAULT_MAX_PROOF_BYTES,
            pool: Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// Sets the largest proof [`Self::verify`] accepts.
    pub fn max_proof_bytes(mut self, max: usize) -> Self {
        self.max_proof_bytes = max;
        self
    }

    /// The scheme proofs are made with.
    pub fn scheme(&self) -> &'static str {
        SCHEME
    }

    /// The parameters for `k`, loaded once.
    pub fn params(&self, k: u32) -> Result<Arc<Params<EqAffine>>, Error> {
        let mut map = self
            .params
            .lock()
            .map_err(|_| Error::Params("lock poisoned".into()))?;
        if let Some(p) = map.get(&k) {
            return Ok(p.clone());
        }
        let (p, origin) = params::load(&self.source, k)?;
        let p = Arc::new(p);
        map.insert(k, p.clone());
        if let Ok(mut o) = self.origins.lock() {
            o.insert(k, origin);
        }
        Ok(p)
    }

    /// How the parameters for `k` were obtained, once loaded.
    pub fn params_origin(&self, k: u32) -> Option<Origin> {
        self.origins.lock().ok()?.get(&k).cloned()
    }

    /// Generates the keys of `id`; a second call does nothing.
    pub fn compile(&self, id: CircuitId) -> Result<(), Error> {
        let i = slot(id);
        if self.keys[i].get().is_some() {
            return Ok(());
        }
        let _guard = self.compiling[i].lock().map_err(|_| Error::Setup {
            id,
            reason: "lock poisoned".into(),
        })?;
        if self.keys[i].get().is_some() {
            return Ok(());
        }
        let params = self.params(id.k())?;
        let keys = match id {
            CircuitId::WalletOwnershipV2 => keygen(id, params, &Ownership::default()),
            CircuitId::ResponseAttestationV2 => keygen(id, params, &Attestation::default()),
            CircuitId::AgentCapabilityV2 => keygen(id, params, &Capability::default()),
            CircuitId::BalanceRangeV2 => keygen(id, params, &Balance::default()),
        }?;
        self.keygens.fetch_add(1, Ordering::Relaxed);
        let _ = self.keys[i].set(Arc::new(keys));
        Ok(())
    }

    /// Whether `id`'s keys exist.
    pub fn is_compiled(&self, id: CircuitId) -> bool {
        self.keys[slot(id)].get().is_some()
    }

    /// How many key generations ran (each circuit at most once).
    pub fn keygen_count(&self) -> usize {
        self.keygens.load(Ordering::Relaxed)
    }

    /// The verifying-key digest of a compiled circuit: BLAKE2b-256 of the pinned key's
    /// rendering. Two nodes with the same digest accept each other's proofs.
    pub fn vk_digest(&self, id: CircuitId) -> Option<[u8; 32]> {
        self.keys[slot(id)].get().map(|k| k.digest)
    }

    fn keys(&self, id: CircuitId) -> Result<Arc<Keys>, Error> {
        self.keys[slot(id)]
            .get()
            .cloned()
            .ok_or(Error::NotCompiled(id))
    }

    /// Proves `witness` after checking natively that it satisfies its circuit.
    pub fn prove(&self, witness: &Witness) -> Result<Proof, Error> {
        let id = witness.circuit();
        let keys = self.keys(id)?;
        let public = witness.public_inputs()?;
        self.prove_raw(&keys, id, Private::of(witness), public)
    }

    /// Proves whatever it is given, without the native check: for tests that show a bad
    /// witness yields a proof that does not verify.
    #[doc(hidden)]
    pub fn prove_unchecked(
        &self,
        id: CircuitId,
        private: Private,
        public: Vec<Fp>,
    ) -> Result<Proof, Error> {
        let keys = self.keys(id)?;
        self.prove_raw(&keys, id, private, public)
    }

    fn prove_raw(
        &self,
        keys: &Keys,
        id: CircuitId,
        private: Private,
        public: Vec<Fp>,
    ) -> Result<Proof, Error> {
        let data = match id {
            CircuitId::WalletOwnershipV2 => prove_with(keys, Ownership(private), &public),
            CircuitId::ResponseAttestationV2 => prove_with(keys, Attestation(private), &public),
            CircuitId::AgentCapabilityV2 => prove_with(keys, Capability(private), &public),
            CircuitId::BalanceRangeV2 => prove_with(keys, Balance(private), &public),
        }?;
        Ok(Proof {
            circuit: id,
            scheme: SCHEME.into(),
            data,
            public_inputs: public,
            vk_digest: Some(keys.digest),
        })
    }

    /// Verifies `proof` against `public`, the statement the *caller* computed. `Ok(false)`:
    /// well-formed but not a proof of this statement.
    pub fn verify(&self, proof: &Proof, public: &[Fp]) -> Result<bool, Error> {
        if proof.data.is_empty() {
            return Err(Error::EmptyProof);
        }
        if proof.data.len() > self.max_proof_bytes {
            return Err(Error::ProofTooLarge {
                len: proof.data.len(),
                max: self.max_proof_bytes,
            });
        }
        if proof.scheme != SCHEME {
            return Err(Error::UnsupportedScheme(proof.scheme.clone()));
        }
        let id = proof.circuit;
        let keys = self.keys(id)?;
        if public.len() != id.public_inputs() {
            return Err(Error::PublicInputArity {
                id,
                want: id.public_inputs(),
                got: public.len(),
            });
        }
        if let Some(theirs) = proof.vk_digest
            && theirs != keys.digest
        {
            return Err(Error::VersionMismatch {
                id,
                ours: hex::encode(keys.digest),
                theirs: hex::encode(theirs),
            });
        }
        let mut reader = std::io::Cursor::new(&proof.data[..]);
        let verified = {
            let mut transcript = Blake2bRead::<_, EqAffine, Challenge255<_>>::init(&mut reader);
            plonk::verify_proof(
                &keys.params,
                &keys.vk,
                SingleVerifier::new(&keys.params),
                &[&[public]],
                &mut transcript,
            )
        };
        match verified {
            Ok(()) if reader.position() as usize == proof.data.len() => Ok(true),
            Ok(()) => Err(Error::MalformedProof(format!(
                "{} trailing bytes after the transcript",
                proof.data.len() - reader.position() as usize
            ))),
            Err(plonk::Error::Transcript(e)) => Err(Error::MalformedProof(e.to_string())),
            // Not a proof of the caller's statement.
            Err(_) => Ok(false),
        }
    }

    /// [`Self::compile`] on the blocking pool; returns at once when the keys exist, so
    /// callers may call it before every proof.
    pub async fn compile_async(self: &Arc<Self>, id: CircuitId) -> Result<(), Error> {
        if self.is_compiled(id) {
            return Ok(());
        }
        let me = self.clone();
        blocking(move || me.compile(id)).await
    }

    /// [`Self::prove`] on the blocking pool, at most `max_concurrent` at once.
    pub async fn prove_async(self: &Arc<Self>, witness: Witness) -> Result<Proof, Error> {
        self.pooled(move |me| me.prove(&witness)).await
    }

    /// [`Self::verify`] on the blocking pool, at most `max_concurrent` at once.
    pub async fn verify_async(
        self: &Arc<Self>,
        proof: Proof,
        public: Vec<Fp>,
    ) -> Result<bool, Error> {
        self.pooled(move |me| me.verify(&proof, &public)).await
    }

    /// Runs `f` on the blocking pool under a pool permit, counting it as in flight.
    async fn pooled<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let permit = self
            .pool
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Prove("pool closed".into()))?;
        let me = self.clone();
        // The permit moves into the blocking task: a caller whose future is dropped (a
        // timeout, a closed stream) leaves its proof running on the pool, and the slot stays
        // taken until that work really ends, so the bound holds.
        blocking(move || {
            let _permit = permit;
            let now = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            me.peak_in_flight.fetch_max(now, Ordering::SeqCst);
            let r = f(&me);
            me.in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        })
        .await
    }

    /// The most proofs and verifications that ran at the same time on the pool.
    pub fn peak_concurrency(&self) -> usize {
        self.peak_in_flight.load(Ordering::SeqCst)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Prove(format!("worker thread: {e}")))?
}

fn keygen<C: Circuit<Fp>>(
    id: CircuitId,
    params: Arc<Params<EqAffine>>,
    circuit: &C,
) -> Result<Keys, Error> {
    let setup = |e: plonk::Error| Error::Setup {
        id,
        reason: format!("{e:?}"),
    };
    let vk = plonk::keygen_vk(&params, circuit).map_err(setup)?;
    let digest = params::digest(format!("{:?}", vk.pinned()).as_bytes());
    let pk = plonk::keygen_pk(&params, vk.clone(), circuit).map_err(setup)?;
    Ok(Keys {
        params,
        vk,
        pk,
        digest,
    })
}

fn prove_with<C: Circuit<Fp>>(keys: &Keys, circuit: C, public: &[Fp]) -> Result<Vec<u8>, Error> {
    let mut transcript = Blake2bWrite::<_, EqAffine, Challenge255<_>>::init(vec![]);
    plonk::create_proof(
        &keys.params,
        &keys.pk,
        &[circuit],
        &[&[public]],
        UnwrapErr(rand::rngs::SysRng),
        &mut transcript,
    )
    .map_err(|e| Error::Prove(format!("{e:?}")))?;
    Ok(transcript.finalize())
}
