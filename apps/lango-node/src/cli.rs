//! The command-line interface (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// lango-node: an agent node on a peer-to-peer network, with keys at rest you can trust.
///
/// The node keeps its keys encrypted in a data directory (default ~/.lango), proves who it is
/// to peers, and runs their tool calls in a sandbox.
#[derive(Debug, Parser)]
#[command(
    name = "lango-node",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory holding config.toml, the encrypted database and the key envelope.
    #[arg(long, global = true, env = "LANGO_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Configuration file [default: <data-dir>/config.toml].
    #[arg(long, global = true, env = "LANGO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors in the log output.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Never prompt on the terminal (unlock from the keyring, the keyfile or
    /// --passphrase-stdin only).
    #[arg(long, global = true)]
    pub non_interactive: bool,

    /// Read the passphrase as one line from standard input (at most 1024 bytes, 60 s).
    /// Passphrases are never accepted as arguments or environment variables.
    #[arg(long, global = true)]
    pub passphrase_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, show and check the configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Keys at rest: the vault, its secrets, the OS keyring and database encryption.
    #[command(subcommand)]
    Security(SecurityCommand),

    /// Run the node: unlock the keys, join the network, publish this agent's card, and serve
    /// the local admin socket until Ctrl-C or SIGTERM.
    ///
    /// On first start in an empty data directory it creates the vault (asking for a new
    /// passphrase, or using the OS keyring or keyfile when configured), the node key and the
    /// wallet key. It prints the peer ID and DID once it listens.
    ///
    /// Example: lango-node serve
    Serve,

    /// The P2P node: identity, peers, discovery, reputation and revocation. Commands that
    /// show or change live state act on the running node through its admin socket.
    #[command(subcommand)]
    P2p(P2pCommand),

    /// Zero-knowledge proofs (Halo2, no trusted setup): list the circuits, build or check
    /// the parameter cache, prove a statement, verify a proof.
    #[command(subcommand)]
    Zkp(ZkpCommand),

    /// Print a shell completion script.
    ///
    /// Example: lango-node completions bash > /etc/bash_completion.d/lango-node
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ZkpCommand {
    /// List the circuits: ID, k (log2 of rows), public inputs and verifying-key digest. Two
    /// nodes whose digests match accept each other's proofs.
    ///
    /// Example: lango-node zkp circuits --json
    Circuits,

    /// Build the public-parameter cache under <data-dir>/zkp/ (one file per k), or check it
    /// against the pinned digests. A file that does not match is never used: it is rebuilt.
    ///
    /// Example: lango-node zkp params --verify
    Params {
        /// Only check the cache; exit 1 when a file is missing or wrong.
        #[arg(long)]
        verify: bool,
    },

    /// Prove a statement. The inputs file holds the secret and the public values (see the
    /// examples in examples/zkp/); the proof is written as JSON.
    ///
    /// Example: lango-node zkp prove wallet_ownership/v2 --inputs examples/zkp/wallet_ownership.json --out proof.json
    Prove {
        /// Circuit ID (see `zkp circuits`).
        circuit: String,
        /// The statement and witness (JSON, at most 64 KiB).
        #[arg(long, value_name = "FILE")]
        inputs: PathBuf,
        /// Write the proof here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },

    /// Verify a proof. With --inputs, the statement is computed from that file (the
    /// verifier's own values: the nonce it chose, the DIDs, the identity commitment it
    /// trusts); without, the proof is checked against the statement it carries, which only
    /// shows that the prover is self-consistent.
    ///
    /// Example: lango-node zkp verify wallet_ownership/v2 --proof proof.json --inputs statement.json
    Verify {
        /// Circuit ID the proof must be for.
        circuit: String,
        /// The proof (JSON from `zkp prove`).
        #[arg(long, value_name = "FILE")]
        proof: PathBuf,
        /// The verifier's statement (JSON; `idCommitment` instead of `secret`).
        #[arg(long, value_name = "FILE")]
        inputs: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a configuration file with every default, ready to edit.
    Init {
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the effective configuration (file, then environment overrides, then defaults).
    Show,
    /// Check the configuration file: unknown keys, types and ranges. Exits 1 when invalid.
    Validate,
    /// Print the path of the configuration file in use.
    Path,
}

#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// Show how keys are protected: database encryption, key envelope, KDF, keyring,
    /// keyfile. Does not prompt or unlock unless --unlock is given.
    Status {
        /// Unlock to count keys and secrets in an encrypted database.
        #[arg(long)]
        unlock: bool,
    },
    /// Store, list and delete secrets. Values are read from a hidden prompt or stdin, never
    /// from arguments.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Keep an unlock key (never the passphrase) in the OS keyring.
    #[command(subcommand)]
    Keyring(KeyringCommand),
    /// Encrypt the database with SQLCipher (the key comes from the unlocked vault).
    DbMigrate {
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Decrypt the database to plaintext (secret values stay encrypted).
    DbDecrypt {
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Change the passphrase. Only the master key is re-wrapped; no data is rewritten.
    #[command(alias = "migrate-passphrase")]
    ChangePassphrase,
    /// Replace the master key: every secret is re-encrypted and the database re-keyed.
    RotateMasterKey {
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Migrate data written by the Go node (needed only when security.legacy.autoMigrate is
    /// false).
    UpgradeLegacy,
    /// The cloud KMS or HSM named by security.signer.provider (aws-kms, gcp-kms, azure-kv,
    /// pkcs11): health, a round trip, the registered keys. Backends are cargo features
    /// (kms-aws, kms-gcp, kms-azure, kms-pkcs11, kms-all); `kms status` lists those compiled in.
    #[command(subcommand)]
    Kms(KmsCommand),
}

#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Probe the KMS once (encrypt then decrypt with security.kms.keyId) and show the
    /// provider, key, fallback, status and latency. Exits 1 when the KMS is unreachable.
    ///
    /// Example: lango-node security kms status --json
    Status,
    /// Encrypt and decrypt 32 random bytes with the KMS (never the local fallback), and
    /// with --sign also sign and self-verify a message.
    ///
    /// Example: LANGO_PKCS11_PIN=1234 lango-node security kms test --sign
    Test {
        /// Also sign with the signing key (security.kms.signingKeyId or keyId).
        #[arg(long)]
        sign: bool,
    },
    /// List the key registry in the database (unlocks the vault), newest first.
    Keys {
        /// List the keys the KMS itself reports instead (no unlock).
        #[arg(long)]
        remote: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// List secrets (names and metadata only, never values).
    List,
    /// Store a secret. Creates the vault on first use (asks for a new passphrase twice).
    ///
    /// Example: printf %s "$TOKEN" | lango-node security secrets set api.token --stdin
    Set {
        /// The secret's name: 1-128 characters of A-Z a-z 0-9 . _ / -
        name: String,
        /// Read the value from stdin (up to EOF; one trailing newline removed).
        #[arg(long)]
        stdin: bool,
        /// The value is hex (optional 0x prefix), e.g. a private key.
        #[arg(long)]
        hex: bool,
        /// Replace an existing reserved secret (wallet.*, p2p.*, lango.*) without asking.
        #[arg(long)]
        force: bool,
        /// Not supported: it would put the value in the process list and shell history.
        #[arg(long, value_name = "HEX", hide = true)]
        value_hex: Option<String>,
    },
    /// Delete a secret.
    Delete {
        /// The secret's name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// Create a keyring slot and store its unlock key in the OS keyring, so later commands
    /// unlock without a prompt.
    Store,
    /// Remove the unlock key from the OS keyring and the keyring slots from the envelope.
    Clear {
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Show whether the OS keyring is reachable and holds an unlock key (read-only).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum P2pCommand {
    /// Show this node's peer ID, DID, where its key is kept and its listen addresses.
    /// Works without a running node (unlocks the vault to read the keys).
    Identity,
    /// Show the running node's status: connections, cards, refused cards and peers.
    Status,
    /// List the peers the running node is connected to.
    Peers,
    /// Connect the running node to a peer and authenticate it: the handshake runs
    /// (1.2.0-bound when the peer speaks it, legacy 1.1.0/1.0.0 otherwise) and a session is
    /// stored on both sides. Prints the negotiated protocol.
    ///
    /// Example: lango-node p2p connect /ip4/192.0.2.7/tcp/9000/p2p/12D3KooW...
    Connect {
        /// Multiaddr ending in /p2p/<peer-id>.
        multiaddr: String,
        /// Transport connection only, no handshake (the Go CLI's behaviour).
        #[arg(long)]
        no_handshake: bool,
    },
    /// Close every connection of the running node to a peer.
    Disconnect {
        /// The peer ID.
        peer_id: String,
    },
    /// List agents whose cards the running node has accepted.
    Discover {
        /// Only agents announcing this capability.
        #[arg(long, value_name = "CAPABILITY")]
        tag: Option<String>,
    },
    /// Show a peer's reputation, or every known peer's when no DID is given.
    Reputation {
        /// The peer's DID.
        did: Option<String>,
        /// The peer's DID (the Go CLI's spelling).
        #[arg(long = "peer-did", value_name = "DID", conflicts_with = "did")]
        peer_did: Option<String>,
    },
    /// Revoke a DID: its card is deleted and the node refuses it everywhere. Persisted.
    Revoke {
        /// The DID to revoke.
        did: String,
        /// Why (kept with the revocation).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List revoked DIDs (from the configuration and from `p2p revoke`).
    Revocations,
    /// The running node's authenticated sessions. Tokens are never shown.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Invoke a tool on another node through the running node: a handshake runs first when
    /// there is no session. Prints the tool's (sanitized) result as JSON.
    ///
    /// Example: lango-node p2p invoke 12D3KooW... word_count --params '{"text":"a b c"}'
    Invoke {
        /// The peer: a peer ID, or the DID of a peer with a session.
        peer: String,
        /// The tool name.
        tool: String,
        /// Params as a JSON object, or `-` to read them from stdin.
        #[arg(long, value_name = "JSON|-")]
        params: Option<String>,
    },
    /// List the tools another node lets this one call (capability query).
    Tools {
        /// The peer: a peer ID, or the DID of a peer with a session.
        peer: String,
    },
    /// Remote tool calls waiting for your approval (p2p.approvalPolicy = "interactive"). A
    /// call not answered within p2p.approvalTimeout is denied.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// The running node's firewall: who may call which tools, at what rate. Default deny.
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// The sandbox remote tool calls run in: which runtime is used and why, a smoke test,
    /// and removal of orphaned containers. Works with networking off.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List the calls waiting: ID, peer DID, tool, params, seconds waiting.
    List,
    /// Let a waiting call run.
    Approve {
        /// The call's ID from `list`.
        id: u64,
    },
    /// Refuse a waiting call (the peer gets "tool invocation denied by owner").
    Deny {
        /// The call's ID from `list`.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// List the rules in effect on the running node.
    List,
    /// Add a rule to the running node. Rules that allow every peer every tool are refused.
    ///
    /// Example: lango-node p2p firewall add --peer-did did:lango:02ab... --tools word_count
    Add {
        /// The peer's DID, or `*` for every peer.
        #[arg(long = "peer-did", value_name = "DID")]
        peer_did: String,
        /// `allow` or `deny`.
        #[arg(long, default_value = "allow")]
        action: String,
        /// Tool names or prefix patterns (`search*`), comma-separated; all tools when absent.
        #[arg(long, value_delimiter = ',')]
        tools: Option<Vec<String>>,
        /// Calls per minute for this peer (0: unlimited).
        #[arg(long, default_value_t = 0)]
        rate_limit: i64,
    },
    /// Remove every rule for a peer DID (`*` removes the wildcard rules).
    Remove {
        /// The peer's DID.
        peer_did: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Show the isolation remote tool calls get: the runtime chosen and why others were
    /// skipped, the OS isolation layers active, the image ID and the pool. Asks the running
    /// node when there is one, else probes this machine as `serve` would.
    Status,
    /// Run the built-in `sandbox_echo` tool through the configured executor and show the
    /// timing.
    Test {
        /// Also run the isolation self-checks inside the sandbox (empty environment, private
        /// workdir, network denied, writes outside the workdir denied, the node's /proc hidden,
        /// memory and process limits): one PASS or FAIL line each; any FAIL exits 1.
        #[arg(long)]
        isolation: bool,
    },
    /// Remove orphaned sandbox containers (stopped ones, stale ones, and those of node
    /// processes that have gone). A running node's in-flight containers are kept.
    ///
    /// Example: lango-node p2p sandbox cleanup --all
    Cleanup {
        /// Remove every container labelled lango.sandbox=true, in-flight ones included.
        #[arg(long, alias = "all")]
        force: bool,
    },
    /// Build the sandbox image locally from the worker binary alone (no base image, no
    /// registry): the worker, the libraries it links and an empty /tmp, run as 65532:65532.
    /// Tagged REPO:<first 12 hex of the worker's SHA-256> and REPO:latest.
    ///
    /// Example: lango-node p2p sandbox build-image --worker ./lango-sandbox-worker
    BuildImage {
        /// The worker binary (default: lango-sandbox-worker next to lango-node).
        #[arg(long, value_name = "PATH")]
        worker: Option<std::path::PathBuf>,
        /// Image repository name.
        #[arg(long, value_name = "REPO", default_value = "lango-sandbox")]
        tag: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List live sessions: peer DID, created, expires, ZK verified (and with --json the peer
    /// ID, protocol, authentication and channel binding).
    List,
    /// End the session with a peer (reason manual_revoke). The peer may not handshake again
    /// for p2p.sessionRevokeCooldown.
    ///
    /// Example: lango-node p2p session revoke --peer-did did:lango:02ab...
    Revoke {
        /// The peer's DID.
        #[arg(long = "peer-did", value_name = "DID")]
        peer_did: Option<String>,
        /// Also remove the peer's downgrade pin, so it may handshake with legacy 1.1.0
        /// again (for a peer that went back to a Go build).
        #[arg(long)]
        unpin: bool,
    },
    /// End every session (reason manual_revoke).
    RevokeAll,
}
