//! Command-line front end: `conduit run ...`, `conduit serve ...`, `conduit ctl ...`,
//! `conduit host ...`.
//!
//! `run` describes the VM either with flags or with `--config FILE` (the JSON VmConfig);
//! the two are exclusive. `run --api-socket PATH` serves the API while the VM runs;
//! `serve --api-socket PATH` serves it with no VM until one is created. SIGINT and
//! SIGTERM are blocked in every thread and taken by one thread with `sigwait`, which stops
//! the VM (and the server).
//!
//! `--seccomp on|log|off` (default on): every thread of `run` and `serve` runs under its
//! kind's filter ([`crate::seccomp`]). The signal thread and the spawner that starts VM
//! threads install `vmm` when they start, the API threads `api` before serving, the main
//! thread `vmm` once set-up is done and before the VM boots.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};

use clap::{Parser, Subcommand};

use crate::config::{self, IommuMode, KernelConfig, OnReboot, SerialMode, VmConfig};
use crate::event_loop::{self, Outcome};
use crate::seccomp::{SeccompFilters, SeccompMode, ThreadKind, ThreadSpawner, VmSeccomp};
use crate::vm::{Vm, VmError};

/// Exit status when the guest powered off.
pub const EXIT_POWEROFF: u8 = 0;
/// Exit status for any error (bad input, host problem, vCPU failure).
pub const EXIT_ERROR: u8 = 1;
/// Exit status when the guest rebooted and `--on-reboot exit` was in force.
pub const EXIT_REBOOT: u8 = 3;
/// Exit status when the host stopped the VM by force (API `vm.shutdown` timed out, or
/// `vmm.shutdown`).
pub const EXIT_FORCED: u8 = 4;
/// Exit status base for a stop by signal (128 + signal number, as shells report).
pub const EXIT_SIGNAL_BASE: u8 = 128;

#[derive(Parser, Debug)]
#[command(
    name = "conduit",
    version,
    about = "A small, fast VMM for VFIO (GPU) passthrough"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a Linux guest.
    Run(RunArgs),
    /// Serve the REST API on a unix socket; VMs are created and booted through it.
    Serve(ServeArgs),
    /// Talk to a running `conduit serve` or `conduit run --api-socket` (the API client).
    Ctl(crate::ctl::CtlArgs),
    /// Check, inventory and prepare this host for passthrough.
    Host(crate::host::HostArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Where to create the API socket (mode 0600; a stale socket is replaced).
    #[arg(long, value_name = "PATH")]
    api_socket: PathBuf,
    /// seccomp filters of conduit's threads (resources/seccomp/x86_64.json): `on` stops the
    /// process on a call outside a thread's list, `log` lets it through and has the kernel
    /// log it.
    #[arg(long, value_enum, default_value_t = SeccompMode::On)]
    seccomp: SeccompMode,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The whole VM as a JSON VmConfig (resources/vmconfig.schema.json), instead of the
    /// flags that describe it.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = [
            "kernel", "initramfs", "cmdline", "cpus", "memory", "serial", "hugepages",
            "on_reboot", "devices", "gpus", "iommu",
        ]
    )]
    config: Option<PathBuf>,
    /// Serve the REST API on this unix socket while the VM runs.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// seccomp filters of conduit's threads (resources/seccomp/x86_64.json): `on` stops the
    /// process on a call outside a thread's list, `log` lets it through and has the kernel
    /// log it.
    #[arg(long, value_enum, default_value_t = SeccompMode::On)]
    seccomp: SeccompMode,
    /// Kernel image: bzImage or ELF vmlinux.
    #[arg(long, required_unless_present = "config")]
    kernel: Option<PathBuf>,
    /// Initramfs (cpio archive, optionally compressed).
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = config::DEFAULT_CMDLINE)]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Guest memory, e.g. 512M or 4G.
    #[arg(long, default_value = "512M", value_parser = config::parse_size)]
    memory: u64,
    /// Console: stdio, file=PATH or off.
    #[arg(long, default_value = "stdio", value_parser = config::parse_serial)]
    serial: SerialMode,
    /// Back guest memory with 2 MiB hugepages.
    #[arg(long)]
    hugepages: bool,
    /// What to do when the guest reboots.
    #[arg(long, value_enum, default_value_t = OnReboot::Exit)]
    on_reboot: OnReboot,
    /// Host PCI device to pass through (0000:00:02.0 or its sysfs path); repeat for more.
    /// Options after commas: p2p=on DMA-maps its BARs in the IOMMU for peer-to-peer DMA from
    /// the other devices; rom=PATH gives it that expansion ROM, rom=off hides its own.
    #[arg(long = "device", value_name = "ADDRESS[,p2p=on][,rom=PATH|off]")]
    devices: Vec<String>,
    /// Pass through N devices ready for passthrough, by id or name: 10de:2335x4, h200x4
    /// (chosen on one NUMA node when possible, besides any --device).
    #[arg(long, value_name = "SPEC")]
    gpus: Option<String>,
    /// IOMMU interface for passthrough devices.
    #[arg(long, value_enum, default_value_t = IommuMode::Auto)]
    iommu: IommuMode,
}

impl RunArgs {
    /// Appends the devices `--gpus` selects on `root` to the `--device` list.
    fn add_gpus(&mut self, root: &crate::host::HostRoot) -> Result<(), crate::host::HostError> {
        if let Some(spec) = &self.gpus {
            let taken: Vec<String> = self
                .devices
                .iter()
                .map(|d| d.split(',').next().unwrap_or_default().to_string())
                .collect();
            let found = crate::host::select_devices_besides(root, spec, &taken)?;
            self.devices.extend(found);
        }
        Ok(())
    }

    /// The VmConfig the flags (or `--config`) describe, validated.
    fn into_config(self) -> Result<VmConfig, String> {
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            return VmConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()));
        }
        let devices = self
            .devices
            .iter()
            .map(|d| config::parse_device_spec(d).map_err(|e| format!("--device {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let config = VmConfig {
            kernel: self.kernel.map(|path| KernelConfig {
                path,
                initramfs: self.initramfs,
                cmdline: self.cmdline,
            }),
            payload: None,
            cpus: self.cpus,
            memory_bytes: self.memory,
            hugepages: self.hugepages,
            serial: self.serial,
            on_reboot: self.on_reboot,
            iommu: self.iommu,
            devices,
        };
        // Flag names, not JSON field names, in the messages.
        config.validate().map_err(|e| {
            let flag = match e.field().split(['.', '[']).next().unwrap_or_default() {
                "devices" => "--device".to_string(),
                "kernel" => "--kernel".to_string(),
                f => format!("--{}", f.replace('_', "-")),
            };
            match e {
                config::ConfigError::Invalid { message, .. } => format!("{flag}: {message}"),
                other => other.to_string(),
            }
        })?;
        Ok(config)
    }
}

/// The VmConfig that `conduit run ARGS` describes (`args`: what follows `run`), validated,
/// with the messages `run` prints; `--gpus` is left unresolved (that needs the host) and
/// `--config FILE` is read. For tests and the fuzz targets.
pub fn run_config<I, T>(args: I) -> Result<VmConfig, String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    let argv = ["conduit", "run"]
        .into_iter()
        .map(std::ffi::OsString::from)
        .chain(args.into_iter().map(Into::into));
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Run(args) => args.into_config(),
        _ => Err("not a run command".into()),
    }
}

/// Maps how the VM stopped to the process exit status.
pub fn exit_status(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::PowerOff => EXIT_POWEROFF,
        Outcome::Reset => EXIT_REBOOT,
        Outcome::Signal(s) => EXIT_SIGNAL_BASE.saturating_add(*s as u8),
        Outcome::VcpuFailed(_) => EXIT_ERROR,
        Outcome::ForcedOff => EXIT_FORCED,
    }
}

/// What the main thread of `run` and `serve` waits for.
enum Event {
    /// SIGINT or SIGTERM.
    Signal(i32),
    /// `vmm.shutdown` was answered.
    ApiShutdown,
    /// The VM stopped.
    VmStopped(Result<Outcome, VmError>),
}

fn error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("conduit: error: {msg}");
    ExitCode::from(EXIT_ERROR)
}

/// Blocks SIGINT/SIGTERM (in this thread and every thread started after) and starts the
/// thread that takes them, under the `vmm` filter. Call before starting any other thread.
fn take_signals(events: &mpsc::Sender<Event>, filters: &Arc<SeccompFilters>) -> Result<(), String> {
    event_loop::block_stop_signals().map_err(|e| e.to_string())?;
    let tx = events.clone();
    let filters = filters.clone();
    let (confined_tx, confined) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if !filters.apply_and_report(ThreadKind::Vmm, &confined_tx) {
                return;
            }
            while let Ok(sig) = event_loop::wait_stop_signal() {
                if tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    match confined.recv() {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the signal thread ended while starting".into()),
    }
}

/// The filters of `mode`, the signal thread and the spawner of VM threads (both under
/// `vmm`). Call before starting any other thread.
fn seccomp_setup(
    mode: SeccompMode,
    events: &mpsc::Sender<Event>,
) -> Result<(Arc<SeccompFilters>, VmSeccomp), String> {
    let filters = SeccompFilters::builtin(mode).map_err(|e| e.to_string())?;
    if mode == SeccompMode::Log {
        eprintln!(
            "conduit: seccomp in log mode: calls outside a thread's allow-list ({}) go through and the kernel logs each (dmesg or the audit log: type=1326 ... syscall=N)",
            crate::seccomp::FILTER_FILE
        );
    }
    // First: every thread started after it has SIGINT/SIGTERM blocked.
    take_signals(events, &filters)?;
    let spawner = ThreadSpawner::start(filters.clone()).map_err(|e| e.to_string())?;
    Ok((filters, VmSeccomp::Spawner(Arc::new(spawner))))
}

fn start_server(
    path: &Path,
    backend: Arc<dyn crate::api::Backend>,
    events: &mpsc::Sender<Event>,
    filters: &Arc<SeccompFilters>,
) -> Result<crate::api::Server, String> {
    let tx = events.clone();
    crate::api::Server::start(
        path,
        backend,
        Box::new(move || {
            let _ = tx.send(Event::ApiShutdown);
        }),
        filters,
    )
    .map_err(|e| e.to_string())
}

/// `conduit run`.
fn run(mut args: RunArgs) -> ExitCode {
    if let Err(e) = args.add_gpus(&crate::host::HostRoot::system()) {
        return error(e);
    }
    let api_socket = args.api_socket.take();
    let mode = args.seccomp;
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => return error(e),
    };
    let (tx, rx) = mpsc::channel();
    let (filters, seccomp) = match seccomp_setup(mode, &tx) {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let vm = match Vm::create_with(config, seccomp) {
        Ok(vm) => Arc::new(vm),
        Err(e) => return error(e),
    };
    let server = match &api_socket {
        Some(path) => match start_server(
            path,
            Arc::new(crate::api::VmBackend::with_vm(vm.clone())),
            &tx,
            &filters,
        ) {
            Ok(s) => Some(s),
            Err(e) => return error(e),
        },
        None => None,
    };
    // Set-up done: the main thread (and the VM waiter it starts) run under `vmm` from here.
    if let Err(e) = filters.apply(ThreadKind::Vmm) {
        return error(e);
    }
    if let Err(e) = vm.boot() {
        return error(e);
    }
    let waiter = vm.clone();
    let stopped = tx.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("vm-wait".into())
        .spawn(move || {
            let _ = stopped.send(Event::VmStopped(waiter.wait()));
        })
    {
        let _ = vm.kill();
        return error(format!("cannot start the VM waiter thread: {e}"));
    }
    let mut signal = None;
    let result = loop {
        match rx.recv() {
            Ok(Event::VmStopped(r)) => break r,
            Ok(Event::Signal(s)) => {
                signal.get_or_insert(s);
                // The VM stops; its waiter then reports.
                let _ = vm.kill();
            }
            Ok(Event::ApiShutdown) => {
                let _ = vm.kill();
            }
            Err(_) => break vm.wait(),
        }
    };
    if let Some(server) = server {
        server.stop();
    }
    let result = match signal {
        Some(s) => Ok(Outcome::Signal(s)),
        None => result,
    };
    match result {
        Ok(outcome) => {
            match &outcome {
                Outcome::PowerOff => eprintln!("conduit: guest powered off"),
                Outcome::Reset => eprintln!("conduit: guest rebooted (--on-reboot exit)"),
                Outcome::Signal(s) => eprintln!("conduit: stopped by signal {s}"),
                Outcome::VcpuFailed(m) => eprintln!("conduit: error: {m}"),
                Outcome::ForcedOff => eprintln!("conduit: the VM was stopped by force"),
            }
            ExitCode::from(exit_status(&outcome))
        }
        Err(e) => error(e),
    }
}

/// `conduit serve`: the API with no VM until one is created; exits on `vmm.shutdown` (0)
/// or a signal (128 + N), stopping any VM first.
fn serve(args: ServeArgs) -> ExitCode {
    let (tx, rx) = mpsc::channel();
    let (filters, seccomp) = match seccomp_setup(args.seccomp, &tx) {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let backend = Arc::new(crate::api::VmBackend::new().with_seccomp(seccomp));
    let server = match start_server(&args.api_socket, backend.clone(), &tx, &filters) {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    if let Err(e) = filters.apply(ThreadKind::Vmm) {
        return error(e);
    }
    eprintln!("conduit: serving the API on {}", args.api_socket.display());
    let status = match rx.recv() {
        Ok(Event::Signal(s)) => {
            crate::api::Backend::shutdown_vmm(backend.as_ref());
            eprintln!("conduit: stopped by signal {s}");
            EXIT_SIGNAL_BASE.saturating_add(s as u8)
        }
        Ok(Event::ApiShutdown) => {
            eprintln!("conduit: vmm.shutdown");
            0
        }
        Ok(Event::VmStopped(_)) | Err(_) => 0,
    };
    server.stop();
    // Stop a VM created after the vmm.shutdown answer, if any.
    crate::api::Backend::shutdown_vmm(backend.as_ref());
    ExitCode::from(status)
}

/// Entry point of the `conduit` binary.
pub fn main() -> ExitCode {
    one_malloc_arena();
    crate::logger::init();
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Host(args) => crate::host::main(args),
        Command::Ctl(args) => crate::ctl::main(args),
        Command::Serve(args) => serve(args),
        Command::Run(args) => run(args),
    };
    crate::logger::flush();
    status
}

/// All threads allocate from glibc's main arena. By default each thread that allocates
/// gets an arena of its own, a 64 MiB-aligned heap: on hosts with transparent hugepages
/// `always` its first touch can fault in a whole 2 MiB page, so every vCPU, VM and mapping
/// thread could add 2 MiB of resident memory for a few KiB of data. Conduit's threads
/// allocate little and rarely at once, so one arena costs nothing measurable.
fn one_malloc_arena() {
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread runs.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } != 1 {
        log::debug!("mallopt(M_ARENA_MAX, 1) refused: one arena per thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testutil::FakeHost;

    #[test]
    fn seccomp_is_on_unless_asked_otherwise() {
        let run = |extra: &[&str]| {
            let args = [&["conduit", "run", "--config", "vm.json"][..], extra].concat();
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Run(r)) => Ok(r.seccomp),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(run(&[]), Ok(SeccompMode::On));
        assert_eq!(run(&["--seccomp", "log"]), Ok(SeccompMode::Log));
        assert_eq!(run(&["--seccomp", "off"]), Ok(SeccompMode::Off));
        let err = run(&["--seccomp", "maybe"]).unwrap_err();
        assert!(err.contains("[possible values: on, log, off]"), "{err}");
        let serve =
            Cli::try_parse_from(["conduit", "serve", "--api-socket", "s", "--seccomp", "log"]);
        match serve.unwrap().command {
            Command::Serve(s) => assert_eq!(s.seccomp, SeccompMode::Log),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gpus_flag_adds_ready_devices_besides_device() {
        let cli = Cli::try_parse_from([
            "conduit",
            "run",
            "--kernel",
            "k",
            "--device",
            "0000:00:02.0",
            "--gpus",
            "1b36:0010x1",
        ])
        .unwrap();
        let Command::Run(mut args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.gpus.as_deref(), Some("1b36:0010x1"));
        let h = FakeHost::new();
        for (addr, group) in [("0000:00:02.0", 2), ("0000:00:03.0", 3)] {
            h.pci(addr, "1b36:0010", 0x010802)
                .driver("vfio-pci")
                .group(group);
        }
        args.add_gpus(&h.root()).unwrap();
        assert_eq!(args.devices, ["0000:00:02.0", "0000:00:03.0"]);
        // A --device with options still counts as taken.
        args.devices = vec!["0000:00:02.0,p2p=on".into()];
        args.gpus = Some("1b36:0010x1".into());
        args.add_gpus(&h.root()).unwrap();
        assert_eq!(args.devices, ["0000:00:02.0,p2p=on", "0000:00:03.0"]);
        args.gpus = Some("1b36:0010x2".into());
        let err = args.add_gpus(&h.root()).unwrap_err().to_string();
        assert!(err.contains("2 wanted, 0 ready"), "{err}");
        let bad = Cli::try_parse_from(["conduit", "run", "--kernel", "k", "--gpus"]);
        assert!(bad.is_err());
    }

    fn run_args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["conduit", "run", "--kernel", "k"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => args,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn device_options_reach_the_config() {
        let c = run_args(&[
            "--device",
            "00:07.0,p2p=on",
            "--device",
            "0000:00:06.0,rom=/tmp/edu.rom",
            "--device",
            "00:04.0,rom=off",
        ])
        .into_config()
        .unwrap();
        assert_eq!(c.devices[0].address, "0000:00:07.0");
        assert!(c.devices[0].p2p && !c.devices[1].p2p);
        assert_eq!(
            c.devices[1].rom,
            config::RomConfig::File("/tmp/edu.rom".into())
        );
        assert_eq!(c.devices[2].rom, config::RomConfig::Off);
        let e = run_args(&["--device", "00:07.0,p2p=maybe"])
            .into_config()
            .unwrap_err();
        assert_eq!(
            e,
            "--device 00:07.0,p2p=maybe: p2p=\"maybe\": use p2p=on or p2p=off"
        );
        let e = run_args(&["--device", "zz,p2p=on"])
            .into_config()
            .unwrap_err();
        assert!(
            e.starts_with("--device: \"zz\" is not a PCI address"),
            "{e}"
        );
    }

    #[test]
    fn run_flags_become_a_config_with_flag_names_in_errors() {
        let c = run_config([
            "--kernel",
            "/k",
            "--memory",
            "1G",
            "--device",
            "/sys/bus/pci/devices/0000:41:00.0",
            "--device",
            "42:00.0",
        ])
        .unwrap();
        assert_eq!(c.memory_bytes, 1 << 30);
        let addrs: Vec<&str> = c.devices.iter().map(|d| d.address.as_str()).collect();
        assert_eq!(addrs, ["0000:41:00.0", "0000:42:00.0"]);
        let err = run_config(["--kernel", "/k", "--device", "gpu0"]).unwrap_err();
        assert!(
            err.starts_with("--device: \"gpu0\" is not a PCI address"),
            "{err}"
        );
        let err = run_config(["--kernel", "/k", "--cpus", "0"]).unwrap_err();
        assert!(err.starts_with("--cpus: must be 1..=254"), "{err}");
        assert!(
            run_config(["--memory", "1G"]).is_err(),
            "--kernel is required"
        );
    }
}
