//! The node's configuration file: one TOML document composed of the sections each crate owns.
//!
//! Loading is strict and explains itself:
//! - every key in the file must be known; an unknown key is an error naming its full path and,
//!   when one is close, the key that was probably meant;
//! - deprecated keys are accepted with a warning and never written back;
//! - environment variables `LANGO_<SECTION>_<KEY>` (case-insensitive, underscores between and
//!   inside words optional) override the file, e.g. `LANGO_SECURITY_KDF_ARGON2_MEMORYKIB=131072`;
//! - each section's `validate()` runs on every load, and all problems are reported together.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// Largest configuration file accepted.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Environment variables that start with `LANGO_` but are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &[
    "LANGO_DATA_DIR",
    "LANGO_CONFIG",
    "LANGO_LOG",
    "LANGO_KEYFILE",
    // The PKCS#11 user PIN (read by the backend; kept out of the configuration file).
    "LANGO_PKCS11_PIN",
];

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NodeConfig {
    /// `log`: how the node logs.
    pub log: LogConfig,
    /// `security`: keys at rest.
    pub security: SecurityConfig,
    /// `p2p` (lango-p2p): the node on the network.
    pub p2p: lango_p2p::config::P2pConfig,
    /// `a2a` (lango-p2p): how this agent describes itself on its card.
    pub a2a: lango_p2p::config::A2aConfig,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `log` section (owned by the app).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LogConfig {
    /// Default filter when neither `RUST_LOG` nor `-v`/`-q` is given (e.g. `info`,
    /// `lango_p2p=debug,info`).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl LogConfig {
    fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        match tracing_subscriber::EnvFilter::try_new(&self.level) {
            Ok(_) => Ok(()),
            Err(e) => Err(vec![format!(
                "{prefix}.level: {:?} is not a log filter: {e}",
                self.level
            )]),
        }
    }
}

/// The `security` section, composed of the crates' sections.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// `security.signer` (lango-secrets): which provider encrypts new secrets.
    pub signer: lango_secrets::config::SignerConfig,
    /// `security.kdf` (lango-crypto): how new passphrase slots are stretched.
    pub kdf: lango_crypto::KdfConfig,
    /// `security.keyring` (lango-keyring): the OS keyring.
    pub keyring: lango_keyring::KeyringConfig,
    /// `security.passphrase` (lango-secrets): keyfile and unlock sources.
    pub passphrase: lango_secrets::config::PassphraseConfig,
    /// `security.dbEncryption` (lango-secrets): SQLCipher for new databases.
    pub db_encryption: lango_secrets::config::DbEncryptionConfig,
    /// `security.legacy` (lango-secrets): migration of Go data.
    pub legacy: lango_secrets::config::LegacyConfig,
    /// `security.secrets` (lango-secrets): limits of the secrets store.
    pub secrets: lango_secrets::config::SecretsConfig,
    /// `security.kms` (lango-kms): the cloud KMS or HSM when `signer.provider` names one.
    pub kms: crate::kms::KmsSection,
}

impl SecurityConfig {
    /// The vault's view of this section. `LANGO_KEYFILE` (a path, not a secret) overrides
    /// `security.passphrase.keyfile`.
    pub fn vault(&self) -> lango_secrets::VaultConfig {
        lango_secrets::VaultConfig {
            kdf: self.kdf.clone(),
            keyring: self.keyring.clone(),
            passphrase: self.passphrase.clone(),
            db_encryption: self.db_encryption.clone(),
            legacy: self.legacy.clone(),
            secrets: self.secrets.clone(),
            signer: self.signer.clone(),
            keyfile_env: std::env::var_os("LANGO_KEYFILE").map(std::path::PathBuf::from),
        }
    }
}

/// A key that is still accepted but should no longer be used.
#[derive(Debug, Clone, Copy)]
pub struct Deprecation {
    /// Full dotted path.
    pub path: &'static str,
    /// What to do instead.
    pub advice: &'static str,
}

/// Deprecated keys of every section. Their values are accepted (and, where a section still
/// needs them, read) but never written by `config init`.
pub const DEPRECATED: &[Deprecation] = &[
    Deprecation {
        path: "p2p.keyDir",
        advice: "the node key lives in the encrypted secrets store; this directory is only read \
                 to migrate a legacy node.key (and used as the key file location when there is \
                 no secrets store)",
    },
    Deprecation {
        path: "p2p.nodeKeyName",
        advice: "ignored: the node key's secret name is always p2p.node.privatekey",
    },
];

/// What went wrong while loading.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file exceeds [`MAX_CONFIG_BYTES`].
    #[error("{path} is {len} bytes; configuration files are limited to {MAX_CONFIG_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// The file is not valid TOML.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (line and column included).
        message: String,
    },
    /// One or more keys or values are wrong.
    #[error("configuration {path} is invalid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file (or `<defaults>`).
        path: String,
        /// Each problem, starting with the key path.
        problems: Vec<String>,
    },
}

/// A loaded configuration and what loading it noticed.
#[derive(Debug)]
pub struct Loaded {
    /// The effective configuration.
    pub config: NodeConfig,
    /// The file it came from, if one existed.
    pub source: Option<PathBuf>,
    /// Warnings (deprecated keys, ignored environment variables).
    pub warnings: Vec<String>,
    /// Keys set from the environment (paths).
    pub env_overrides: Vec<String>,
}

/// Loads `path` (absent file = defaults), applies `env`, checks keys and values.
pub fn load(path: &Path, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let (table, source) = match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.len() > MAX_CONFIG_BYTES {
                return Err(ConfigError::TooLarge {
                    path: path.to_owned(),
                    len: meta.len(),
                });
            }
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let table: Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            (table, Some(path.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Table::new(), None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let shown = source
        .as_ref()
        .map_or_else(|| "<defaults>".to_owned(), |p| p.display().to_string());
    from_table(table, env, &shown).map(|mut l| {
        l.source = source;
        l
    })
}

/// The same as [`load`] for an in-memory document (tests, `config validate` on stdin).
pub fn from_table(
    mut table: Table,
    env: &[(String, String)],
    shown: &str,
) -> Result<Loaded, ConfigError> {
    let schema = schema();
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    check_keys(
        &table,
        &schema,
        "",
        DEPRECATED,
        &mut problems,
        &mut warnings,
    );

    let env_overrides = apply_env(&mut table, &schema, env, &mut warnings, &mut problems);

    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: shown.to_owned(),
            problems,
        });
    }
    let config: NodeConfig = Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            path: shown.to_owned(),
            problems: vec![e.message().to_owned()],
        })?;
    validate(&config).map_err(|problems| ConfigError::Invalid {
        path: shown.to_owned(),
        problems,
    })?;
    Ok(Loaded {
        config,
        source: None,
        warnings,
        env_overrides,
    })
}

/// Runs every section's `validate()`, collecting all problems.
pub fn validate(c: &NodeConfig) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let checks: [Result<(), Vec<String>>; 5] = [
        c.log.validate("log"),
        c.security.kdf.validate("security.kdf"),
        c.security.kms.validate(&c.security.signer.provider),
        c.p2p.validate("p2p"),
        c.a2a.validate("a2a"),
    ];
    for r in checks {
        if let Err(p) = r {
            problems.extend(p);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The default configuration as a TOML document, with a header explaining it.
pub fn default_document() -> String {
    let body = toml::to_string_pretty(&NodeConfig::default()).unwrap_or_default();
    format!(
        "# lango-node configuration.\n\
         # Every key is optional; removing one restores its default.\n\
         # Environment variables LANGO_<SECTION>_<KEY> override this file,\n\
         # e.g. LANGO_LOG_LEVEL=debug or LANGO_SECURITY_KDF_ARGON2_MEMORYKIB=131072.\n\
         # Check a change with `lango-node config validate`.\n\n{body}"
    )
}

/// The known key tree: the default configuration serialised. An empty table in it marks a
/// section whose keys are free-form (maps keyed by name); those are checked by serde.
fn schema() -> Table {
    match Value::try_from(NodeConfig::default()) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn check_keys(
    doc: &Table,
    schema: &Table,
    prefix: &str,
    deprecated: &[Deprecation],
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    for (key, value) in doc {
        let path = join(prefix, key);
        if let Some(d) = deprecated.iter().find(|d| d.path == path) {
            warnings.push(format!("`{path}` is deprecated: {}", d.advice));
            continue;
        }
        match schema.get(key) {
            None => {
                let mut msg = format!("unknown key `{path}`");
                if let Some(s) = suggest(key, schema.keys().map(String::as_str)) {
                    msg.push_str(&format!(" (did you mean `{}`?)", join(prefix, s)));
                }
                problems.push(msg);
            }
            Some(Value::Table(sub)) if !sub.is_empty() => match value {
                Value::Table(inner) => {
                    check_keys(inner, sub, &path, deprecated, problems, warnings)
                }
                other => problems.push(format!(
                    "`{path}` must be a table, not {}",
                    other.type_str()
                )),
            },
            Some(_) => {}
        }
    }
}

fn suggest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn normalise_env(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn leaf_paths(t: &Table, prefix: &str, out: &mut BTreeMap<String, (String, Value)>) {
    for (k, v) in t {
        let path = join(prefix, k);
        match v {
            Value::Table(sub) if !sub.is_empty() => leaf_paths(sub, &path, out),
            _ => {
                out.insert(normalise_env(&path), (path, v.clone()));
            }
        }
    }
}

fn parse_env_value(raw: &str, like: &Value) -> Result<Value, String> {
    match like {
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        _ => {
            let doc = format!("v = {raw}");
            let parsed: Table =
                toml::from_str(&doc).map_err(|_| format!("{raw:?} is not a valid value"))?;
            let v = parsed
                .get("v")
                .cloned()
                .ok_or_else(|| "empty value".to_owned())?;
            if std::mem::discriminant(&v) != std::mem::discriminant(like) {
                return Err(format!(
                    "{raw:?} is a {}, expected a {}",
                    v.type_str(),
                    like.type_str()
                ));
            }
            Ok(v)
        }
    }
}

fn apply_env(
    table: &mut Table,
    schema: &Table,
    env: &[(String, String)],
    warnings: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut leaves = BTreeMap::new();
    leaf_paths(schema, "", &mut leaves);
    let mut applied = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("LANGO_") else {
            continue;
        };
        if NON_CONFIG_ENV.contains(&name.as_str()) {
            continue;
        }
        let Some((path, like)) = leaves.get(&normalise_env(rest)) else {
            if name != "LANGO_PASSPHRASE" {
                warnings.push(format!(
                    "ignoring environment variable {name}: it names no configuration key"
                ));
            }
            continue;
        };
        match parse_env_value(raw, like) {
            Ok(v) => {
                set_path(table, path, v);
                applied.push(path.clone());
            }
            Err(e) => problems.push(format!("{path} (from {name}): {e}")),
        }
    }
    applied
}

fn set_path(table: &mut Table, path: &str, value: Value) {
    let mut cur = table;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_owned(), value);
            return;
        }
        let entry = cur
            .entry(part.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        match entry {
            Value::Table(t) => cur = t,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(doc: &str) -> Result<Loaded, ConfigError> {
        from_table(toml::from_str(doc).unwrap(), &[], "test.toml")
    }

    #[test]
    fn defaults_roundtrip_and_validate() {
        let doc = default_document();
        let l = parse(&doc).unwrap();
        assert_eq!(l.config, NodeConfig::default());
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn unknown_key_is_named_with_suggestion() {
        let err = parse("[security.kdf.argon2]\nmemoryKb = 65536\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown key `security.kdf.argon2.memoryKb`"),
            "{err}"
        );
        assert!(
            err.contains("did you mean `security.kdf.argon2.memoryKib`"),
            "{err}"
        );
        let err = parse("[securty]\n").unwrap_err().to_string();
        assert!(
            err.contains("unknown key `securty` (did you mean `security`?)"),
            "{err}"
        );
        let err = parse("zzz = 1\n").unwrap_err().to_string();
        assert!(
            err.contains("unknown key `zzz`") && !err.contains("did you mean"),
            "{err}"
        );
    }

    #[test]
    fn section_type_mismatch() {
        let err = parse("security = 3\n").unwrap_err().to_string();
        assert!(err.contains("`security` must be a table"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_collected() {
        let err = parse(
            "[security.kdf.argon2]\nmemoryKib = 10\nparallelism = 99\n[log]\nlevel = \"=bad=\"\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!()
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn deprecated_keys_warn() {
        let deprecated = [Deprecation {
            path: "security.old",
            advice: "remove it",
        }];
        let doc: Table = toml::from_str("[security]\nold = 1\n").unwrap();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        check_keys(
            &doc,
            &schema(),
            "",
            &deprecated,
            &mut problems,
            &mut warnings,
        );
        assert!(problems.is_empty());
        assert_eq!(
            warnings,
            vec!["`security.old` is deprecated: remove it".to_owned()]
        );
    }

    #[test]
    fn env_overrides() {
        let env = vec![
            (
                "LANGO_SECURITY_KDF_ARGON2_MEMORYKIB".to_owned(),
                "131072".to_owned(),
            ),
            ("LANGO_LOG_FORMAT".to_owned(), "json".to_owned()),
            ("LANGO_DATA_DIR".to_owned(), "/x".to_owned()),
            ("LANGO_NOPE".to_owned(), "1".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let l = from_table(Table::new(), &env, "t").unwrap();
        assert_eq!(l.config.security.kdf.argon2.memory_kib, 131_072);
        assert_eq!(l.config.log.format, LogFormat::Json);
        assert_eq!(l.env_overrides.len(), 2);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        let bad = vec![(
            "LANGO_SECURITY_KDF_ARGON2_MEMORYKIB".to_owned(),
            "lots".to_owned(),
        )];
        let err = from_table(Table::new(), &bad, "t").unwrap_err().to_string();
        assert!(
            err.contains(
                "security.kdf.argon2.memoryKib (from LANGO_SECURITY_KDF_ARGON2_MEMORYKIB)"
            ),
            "{err}"
        );
    }

    #[test]
    fn env_override_is_validated() {
        let env = vec![(
            "LANGO_SECURITY_KDF_PBKDF2_ITERATIONS".to_owned(),
            "5".to_owned(),
        )];
        let err = from_table(Table::new(), &env, "t").unwrap_err().to_string();
        assert!(err.contains("security.kdf.pbkdf2.iterations"), "{err}");
    }
}
