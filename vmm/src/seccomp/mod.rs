//! seccomp-bpf: one allow-list per kind of thread, kept as data in
//! `resources/seccomp/x86_64.json` (seccompiler's JSON format), built into the binary and
//! compiled when the process starts. Compiling at start rather than in a build script keeps
//! the build simple, lets errors name the file and the filter, and costs well under a
//! millisecond.
//!
//! | kind | threads | filter installed |
//! |---|---|---|
//! | `vmm` | main thread of `run`/`serve`, the signal thread, the VM waiter, the [`ThreadSpawner`], the VM thread (build, event loop, teardown, rebuild on reboot) | main: after set-up, before the VM boots; the others: when they start |
//! | `vcpu` | `vcpuN` | in the thread, before its first `KVM_RUN` |
//! | `api` | `api-accept`, `api-workerN` | in the thread, before it serves anything |
//!
//! The VM thread builds the VM again on every reboot and, under `conduit serve`, for every
//! VM the API creates, so the `vmm` list allows building (opening devices, mapping memory,
//! KVM and VFIO ioctls by type); it is installed when the VM thread starts, so every build
//! runs under it. The `vcpu` and `api` lists face the guest and the API clients and are
//! narrow: `vcpu` allows only the five ioctls a running guest can cause, `api` opens files
//! read-only; no list allows executable mappings, `execve`, new sockets or `ptrace`.
//!
//! Filters stack: a thread keeps the filters of the thread that started it and can only add
//! more. vCPU threads start from the VM thread, so they run under both `vmm` and `vcpu`
//! (every call on the `vcpu` list is on the `vmm` list too; a test checks it). A thread
//! started by an API thread would inherit the `api` list, so VM threads are never started
//! there: `Vm::boot` called from the API asks the [`ThreadSpawner`] (under `vmm`) to start
//! them ([`VmSeccomp::Spawner`]).
//!
//! Modes ([`SeccompMode`]): `on` traps a call outside the list (SIGSYS; the handler in
//! `sigsys.rs` says which thread kind made which call, then the process dies of SIGSYS),
//! `log` lets it through and has the kernel log it (`SECCOMP_RET_LOG`: dmesg or the audit
//! log, `type=1326 ... syscall=N`), `off` installs nothing.

mod sigsys;
mod spawner;
mod syscall_names;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{mpsc, Arc, OnceLock};

use seccompiler::{BpfProgram, TargetArch};
use serde_json::Value;

pub use spawner::ThreadSpawner;

/// Where the built-in lists come from (for messages).
pub const FILTER_FILE: &str = "resources/seccomp/x86_64.json";

/// The built-in lists.
const BUILTIN_JSON: &str = include_str!("../../../resources/seccomp/x86_64.json");

/// What a filter does with a system call that is not on its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SeccompMode {
    /// Kill the process with SIGSYS, saying which thread made which call.
    #[default]
    On,
    /// Let the call through; the kernel logs it (to complete a list).
    Log,
    /// No filters.
    Off,
}

impl fmt::Display for SeccompMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeccompMode::On => "on",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        })
    }
}

/// The kinds of threads, each with its own allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ThreadKind {
    /// Main thread, VM thread (build and event loop) and their helpers.
    Vmm,
    /// vCPU threads.
    Vcpu,
    /// API server threads.
    Api,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 3] = [ThreadKind::Vmm, ThreadKind::Vcpu, ThreadKind::Api];

    /// The name of the kind's filter in the JSON file.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Api => "api",
        }
    }
}

impl fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors loading or installing filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter file is not valid.
    #[error("seccomp filter file {file}: {reason}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// One filter of the file does not compile.
    #[error("seccomp filter file {file}: filter \"{kind}\": {reason}")]
    Filter {
        /// The file.
        file: String,
        /// The filter.
        kind: ThreadKind,
        /// What is wrong.
        reason: String,
    },
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter \"{kind}\" in thread {thread}: {reason} (a kernel without seccomp? --seccomp off runs without filters)")]
    Install {
        /// The filter.
        kind: ThreadKind,
        /// The thread's name.
        thread: String,
        /// The kernel's answer.
        reason: String,
    },
    /// The SIGSYS handler could not be installed.
    #[error("cannot install the SIGSYS handler for seccomp: {0}")]
    Handler(#[source] std::io::Error),
    /// The thread spawner could not start.
    #[error("cannot start the VM thread spawner: {0}")]
    Spawner(#[source] std::io::Error),
}

/// Compiled filters for every [`ThreadKind`] in one [`SeccompMode`].
pub struct SeccompFilters {
    mode: SeccompMode,
    /// Empty when the mode is `off`.
    programs: BTreeMap<ThreadKind, BpfProgram>,
}

impl fmt::Debug for SeccompFilters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeccompFilters")
            .field("mode", &self.mode)
            .field("kinds", &self.programs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SeccompFilters {
    /// The built-in lists in `mode`, compiled once per process.
    pub fn builtin(mode: SeccompMode) -> Result<Arc<SeccompFilters>, SeccompError> {
        static COMPILED: [OnceLock<Arc<SeccompFilters>>; 3] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let slot = &COMPILED[mode as usize];
        if let Some(f) = slot.get() {
            return Ok(f.clone());
        }
        let filters = Arc::new(Self::from_json(BUILTIN_JSON, FILTER_FILE, mode)?);
        Ok(slot.get_or_init(|| filters).clone())
    }

    /// Compiles the filters of `json` (named `file` in errors) for `mode`. The file has
    /// exactly one filter per [`ThreadKind`], each with `"mismatch_action": "trap"` and
    /// `"match_action": "allow"` (what `on` means); `log` replaces the mismatch action.
    pub fn from_json(json: &str, file: &str, mode: SeccompMode) -> Result<Self, SeccompError> {
        let file_err = |reason: String| SeccompError::File {
            file: file.to_string(),
            reason,
        };
        let doc: Value = serde_json::from_str(json).map_err(|e| file_err(e.to_string()))?;
        let Some(filters) = doc.as_object() else {
            return Err(file_err("not a JSON object of filters".into()));
        };
        let known: Vec<&str> = ThreadKind::ALL.iter().map(|k| k.name()).collect();
        if let Some(unknown) = filters.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(file_err(format!(
                "unknown filter \"{unknown}\" (the thread kinds are {})",
                known.join(", ")
            )));
        }
        let mut programs = BTreeMap::new();
        for kind in ThreadKind::ALL {
            let filter_err = |reason: String| SeccompError::Filter {
                file: file.to_string(),
                kind,
                reason,
            };
            let Some(filter) = filters.get(kind.name()) else {
                return Err(file_err(format!(
                    "no filter \"{kind}\" (for {kind} threads)"
                )));
            };
            let mut filter = filter.clone();
            for (key, want) in [("mismatch_action", "trap"), ("match_action", "allow")] {
                if filter.get(key).and_then(Value::as_str) != Some(want) {
                    return Err(filter_err(format!(
                        "\"{key}\" must be \"{want}\" (--seccomp picks the action)"
                    )));
                }
            }
            let mismatch = match mode {
                SeccompMode::Off => continue,
                SeccompMode::On => "trap",
                SeccompMode::Log => "log",
            };
            filter["mismatch_action"] = Value::from(mismatch);
            let one = serde_json::json!({ kind.name(): filter }).to_string();
            let mut compiled = seccompiler::compile_from_json(one.as_bytes(), TargetArch::x86_64)
                .map_err(|e| filter_err(e.to_string()))?;
            let program = compiled
                .remove(kind.name())
                .ok_or_else(|| filter_err("compiled to nothing".into()))?;
            programs.insert(kind, program);
        }
        Ok(SeccompFilters { mode, programs })
    }

    /// The mode.
    pub fn mode(&self) -> SeccompMode {
        self.mode
    }

    /// Installs the filter of `kind` in the calling thread (nothing when the mode is
    /// `off`). Threads the caller starts afterwards inherit it.
    pub fn apply(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        let Some(program) = self.programs.get(&kind) else {
            return Ok(());
        };
        // glibc gives a thread its malloc arena on the thread's first allocation, which
        // can read /sys/devices/system/cpu/online: have that happen before the filter.
        std::hint::black_box(Vec::<u8>::with_capacity(64));
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        if self.mode == SeccompMode::On {
            sigsys::install_handler().map_err(SeccompError::Handler)?;
        }
        sigsys::set_thread(kind, &thread);
        seccompiler::apply_filter(program).map_err(|e| SeccompError::Install {
            kind,
            thread,
            reason: e.to_string(),
        })
    }
}

impl SeccompFilters {
    /// [`Self::apply`] in a thread that has just started, reporting the result to the
    /// thread that started it; true when the filter is in and the thread may go on.
    pub fn apply_and_report(
        &self,
        kind: ThreadKind,
        report: &mpsc::SyncSender<Result<(), SeccompError>>,
    ) -> bool {
        let result = self.apply(kind);
        let ok = result.is_ok();
        let _ = report.send(result);
        ok
    }
}

/// How a VM's threads get their filters.
#[derive(Clone, Debug)]
pub enum VmSeccomp {
    /// The VM thread installs the `vmm` filter itself when it starts: right when the VM is
    /// booted from a thread with no filter or with the `vmm` filter (a library user, the
    /// tests).
    Install(Arc<SeccompFilters>),
    /// The VM thread is started by the spawner and inherits its `vmm` filter: right when the
    /// VM may be booted from an API thread (the CLI).
    Spawner(Arc<ThreadSpawner>),
}

impl VmSeccomp {
    /// The built-in filters in `on` mode, installed by the VM thread.
    pub fn builtin() -> Result<Self, SeccompError> {
        Ok(VmSeccomp::Install(SeccompFilters::builtin(
            SeccompMode::On,
        )?))
    }

    /// The filters (the vCPU threads install the `vcpu` one).
    pub fn filters(&self) -> &Arc<SeccompFilters> {
        match self {
            VmSeccomp::Install(f) => f,
            VmSeccomp::Spawner(s) => s.filters(),
        }
    }

    /// Starts a thread named `name` under the `vmm` filter; `job` gets the result of
    /// installing it and must stop on an error.
    pub fn spawn_vmm_thread<F>(
        &self,
        name: &str,
        job: F,
    ) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce(Result<(), SeccompError>) + Send + 'static,
    {
        match self {
            VmSeccomp::Install(filters) => {
                let filters = filters.clone();
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || job(filters.apply(ThreadKind::Vmm)))
            }
            VmSeccomp::Spawner(spawner) => spawner.spawn(name, Box::new(move || job(Ok(())))),
        }
    }
}
