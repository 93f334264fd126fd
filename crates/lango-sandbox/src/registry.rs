//! The tool registry and isolation classes.
//!
//! Only [`IsolationClass::WorkerSafe`] tools can be called by peers. There are two kinds:
//! Rust functions compiled into the worker binary (embedders register theirs in both the node
//! and the worker they build; the worker always has `sandbox_echo`), and operator-configured
//! command tools: a program with fixed arguments that reads the call's params as JSON on stdin
//! and writes a JSON value on stdout. The worker runs a command tool as its own child, inside
//! the same isolation.

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc};

use serde_json::{Map, Value};

use crate::{Error, protocol::valid_tool_name};

/// A Rust tool: params in, a JSON value or an error message out.
pub type ToolFn = Arc<dyn Fn(&Map<String, Value>) -> Result<Value, String> + Send + Sync>;

/// Where a tool may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationClass {
    /// Stateless, needs no secrets, database or wallet: may run in the worker for peers.
    WorkerSafe,
    /// Runs only for the owner's own agent, in process. The default.
    LocalOnly,
}

/// How much harm a tool can do (`p2p.maxSafetyLevel` gates remote calls by it). Ordered:
/// `Safe < Moderate < Dangerous`. A tool no registry knows counts as dangerous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SafetyLevel {
    /// Reads nothing sensitive and changes nothing (e.g. `sandbox_echo`).
    Safe,
    /// The default for registered tools.
    Moderate,
    /// May change or reveal something of value.
    Dangerous,
}

impl SafetyLevel {
    /// Parses `safe`, `moderate` or `dangerous`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "safe" => Ok(Self::Safe),
            "moderate" => Ok(Self::Moderate),
            "dangerous" => Ok(Self::Dangerous),
            other => Err(format!(
                "unknown safety level {other:?} (expected safe, moderate or dangerous)"
            )),
        }
    }
}

/// An operator-configured command tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTool {
    /// Tool name peers call.
    pub name: String,
    /// One line for capability listings.
    pub description: String,
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Fixed arguments.
    pub args: Vec<String>,
}

/// How a registered tool runs.
#[derive(Clone)]
pub enum ToolKind {
    /// A Rust function.
    Function(ToolFn),
    /// A command the worker executes.
    Command(CommandTool),
}

/// One registered tool.
#[derive(Clone)]
pub struct ToolEntry {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Isolation class.
    pub class: IsolationClass,
    /// Implementation.
    pub kind: ToolKind,
    /// Safety level (moderate unless set).
    pub safety: SafetyLevel,
}

impl fmt::Debug for ToolEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolEntry")
            .field("name", &self.name)
            .field("class", &self.class)
            .field(
                "kind",
                &match &self.kind {
                    ToolKind::Function(_) => "function",
                    ToolKind::Command(_) => "command",
                },
            )
            .finish()
    }
}

/// The name of the built-in smoke-test tool.
pub const SANDBOX_ECHO: &str = "sandbox_echo";

/// Registered tools by name.
#[derive(Clone, Default, Debug)]
pub struct ToolRegistry {
    tools: BTreeMap<String, ToolEntry>,
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry every worker has: `sandbox_echo`, which returns its params.
    pub fn builtin() -> Self {
        let mut r = Self::new();
        // The name is valid and the registry empty, so this cannot fail.
        let _ = r.register_fn(
            SANDBOX_ECHO,
            "Returns its params unchanged (sandbox smoke test)",
            IsolationClass::WorkerSafe,
            |params| Ok(Value::Object(params.clone())),
        );
        r.set_safety(SANDBOX_ECHO, SafetyLevel::Safe);
        r
    }

    /// Registers a Rust tool.
    pub fn register_fn<F>(
        &mut self,
        name: &str,
        description: &str,
        class: IsolationClass,
        f: F,
    ) -> Result<(), Error>
    where
        F: Fn(&Map<String, Value>) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.insert(ToolEntry {
            name: name.into(),
            description: description.into(),
            class,
            kind: ToolKind::Function(Arc::new(f)),
            safety: SafetyLevel::Moderate,
        })
    }

    /// Registers a command tool; command tools are always worker-safe (they only ever run in
    /// the sandbox).
    pub fn register_command(&mut self, tool: CommandTool) -> Result<(), Error> {
        if !tool.program.is_absolute() {
            return Err(Error::Config(format!(
                "command tool {:?}: program {} must be an absolute path",
                tool.name,
                tool.program.display()
            )));
        }
        self.insert(ToolEntry {
            name: tool.name.clone(),
            description: tool.description.clone(),
            class: IsolationClass::WorkerSafe,
            kind: ToolKind::Command(tool),
            safety: SafetyLevel::Moderate,
        })
    }

    fn insert(&mut self, entry: ToolEntry) -> Result<(), Error> {
        if !valid_tool_name(&entry.name) {
            return Err(Error::Config(format!(
                "tool name {:?} must match ^[A-Za-z0-9_.:-]{{1,128}}$",
                entry.name
            )));
        }
        if self.tools.contains_key(&entry.name) {
            return Err(Error::Config(format!(
                "tool {:?} is registered twice",
                entry.name
            )));
        }
        self.tools.insert(entry.name.clone(), entry);
        Ok(())
    }

    /// Sets the safety level of a registered tool; `false` when there is no such tool.
    pub fn set_safety(&mut self, name: &str, level: SafetyLevel) -> bool {
        match self.tools.get_mut(name) {
            Some(t) => {
                t.safety = level;
                true
            }
            None => false,
        }
    }

    /// The safety level of `name`: dangerous when it is not registered.
    pub fn safety(&self, name: &str) -> SafetyLevel {
        self.get(name).map_or(SafetyLevel::Dangerous, |t| t.safety)
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&ToolEntry> {
        self.tools.get(name)
    }

    /// Whether a peer may call `name`.
    pub fn is_worker_safe(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|t| t.class == IsolationClass::WorkerSafe)
    }

    /// The tools peers may call, by name.
    pub fn worker_safe(&self) -> impl Iterator<Item = &ToolEntry> {
        self.tools
            .values()
            .filter(|t| t.class == IsolationClass::WorkerSafe)
    }

    /// The programs of the registered command tools.
    pub fn command_programs(&self) -> impl Iterator<Item = &std::path::Path> {
        self.tools.values().filter_map(|t| match &t.kind {
            ToolKind::Command(c) => Some(c.program.as_path()),
            ToolKind::Function(_) => None,
        })
    }

    /// Number of tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_validation() {
        let mut r = ToolRegistry::builtin();
        assert!(r.is_worker_safe(SANDBOX_ECHO));
        r.register_fn("wallet_sign", "", IsolationClass::LocalOnly, |_| {
            Ok(Value::Null)
        })
        .unwrap();
        assert!(!r.is_worker_safe("wallet_sign"));
        assert!(!r.is_worker_safe("missing"));
        assert!(
            r.register_fn(SANDBOX_ECHO, "", IsolationClass::WorkerSafe, |_| Ok(
                Value::Null
            ))
            .is_err()
        );
        assert!(
            r.register_fn("bad name", "", IsolationClass::WorkerSafe, |_| Ok(
                Value::Null
            ))
            .is_err()
        );
        let rel = CommandTool {
            name: "c".into(),
            description: String::new(),
            program: "jq".into(),
            args: vec![],
        };
        assert!(r.register_command(rel).is_err());
        assert_eq!(r.worker_safe().count(), 1);
        assert_eq!(r.safety(SANDBOX_ECHO), SafetyLevel::Safe);
        assert_eq!(r.safety("wallet_sign"), SafetyLevel::Moderate);
        assert_eq!(r.safety("unknown"), SafetyLevel::Dangerous);
        assert!(
            SafetyLevel::Safe < SafetyLevel::Moderate
                && SafetyLevel::Moderate < SafetyLevel::Dangerous
        );
        assert!(SafetyLevel::parse("risky").is_err());
    }
}
