//! `conduit host ...`: arguments and output.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use super::bind::{self, BindOptions, BindTarget, UnbindTarget};
use super::check::{self, CheckOptions};
use super::inventory::{self, ListFilter};
use super::peek::{self, PeekAt};
use super::sysfs::{normalize_address, HostRoot, PciId};
use super::{HostError, SysfsKernel};

/// `conduit host`.
#[derive(clap::Args, Debug)]
pub struct HostArgs {
    /// Read (and write) the host under this directory instead of `/` (for tests).
    #[arg(long, global = true, hide = true, default_value = "/")]
    pub host_root: PathBuf,
    /// Bind state file (default: /run/conduit/host-bind.json under the host root).
    #[arg(long, global = true, hide = true)]
    pub state_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: HostCommand,
}

/// `conduit host` subcommands.
#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// Check whether this host can pass devices through (exit 0: ready, 1: not ready).
    Check {
        /// Print JSON ({"ready", "memory", "findings": [{"check", "status", "device", "message", "fix"}]}).
        #[arg(long)]
        json: bool,
        /// Guest memory that will be pinned, for the memlock check (e.g. 64G).
        #[arg(long, default_value = "1G", value_parser = crate::config::parse_size)]
        memory: u64,
    },
    /// List PCI devices, their IOMMU groups and whether they are ready for passthrough.
    List {
        /// Print a JSON array (fields documented in vmm::host::inventory).
        #[arg(long)]
        json: bool,
        /// Which devices: display controllers (gpu) or every class (all); default: gpu, or
        /// all with --id (an id names the devices already).
        #[arg(long, value_enum)]
        class: Option<ClassFilter>,
        /// Only devices with this VENDOR:DEVICE id (hex), e.g. 10de:2335.
        #[arg(long)]
        id: Option<String>,
    },
    /// Move devices (with their whole IOMMU groups) to vfio-pci now, no reboot.
    Bind {
        /// A PCI address (0000:17:00.0) or a VENDOR:DEVICE id (10de:2335).
        target: String,
        /// With an id: how many devices to bind (default: all of that id).
        #[arg(long)]
        count: Option<usize>,
        /// Bind even a group holding a device the host uses (mounted disk, default route).
        #[arg(long)]
        force: bool,
    },
    /// Read one 32-bit register of a device on vfio-pci through VFIO and print it (e.g.
    /// NVIDIA's PMC_BOOT_0 at BAR0 offset 0). Opening the device resets it, as a VM start does;
    /// it must not be in use by a VM.
    Peek {
        /// A PCI address (0000:17:00.0) of a device on vfio-pci.
        address: String,
        /// BAR number (0-5).
        #[arg(long, default_value_t = 0)]
        bar: u8,
        /// Byte offset in the BAR, a multiple of 4 (decimal or 0x hex).
        #[arg(long, default_value = "0", value_parser = parse_offset)]
        offset: u64,
    },
    /// Give devices bound by `conduit host bind` back to their original drivers.
    Unbind {
        /// A PCI address: its whole IOMMU group is restored.
        #[arg(required_unless_present = "all")]
        address: Option<String>,
        /// Restore everything `conduit host bind` moved.
        #[arg(long, conflicts_with = "address")]
        all: bool,
    },
}

/// `--offset` of `peek`: decimal or `0x` hex.
fn parse_offset(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a byte offset (decimal or 0x hex)"))
}

/// `--class` of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassFilter {
    /// Display controllers (class 0x03).
    Gpu,
    /// Every device.
    All,
}

/// What `list` shows: `--class` when given, else display controllers, or every class when
/// `--id` already names the devices.
fn list_filter(class: Option<ClassFilter>, id: Option<PciId>) -> ListFilter {
    let class = class.unwrap_or(if id.is_some() {
        ClassFilter::All
    } else {
        ClassFilter::Gpu
    });
    ListFilter {
        all_classes: class == ClassFilter::All,
        id,
    }
}

fn fail(e: HostError) -> ExitCode {
    eprintln!("conduit: error: {e}");
    ExitCode::from(crate::cli::EXIT_ERROR)
}

/// Writes to stdout; a closed pipe (`conduit host list | head`) is not an error.
fn out(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

macro_rules! outln {
    ($($arg:tt)*) => {
        out(&format!("{}\n", format_args!($($arg)*)))
    };
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), String> {
    serde_json::to_string_pretty(v)
        .map(|s| outln!("{s}"))
        .map_err(|e| e.to_string())
}

/// Runs `conduit host ...`; the exit status follows the subcommand's contract.
pub fn main(args: HostArgs) -> ExitCode {
    let mut root = HostRoot::at(&args.host_root);
    if let Some(s) = args.state_file {
        root = root.with_state_file(s);
    }
    match args.command {
        HostCommand::Check { json, memory } => {
            let report = match check::check(&root, CheckOptions { memory }) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if json {
                if let Err(e) = print_json(&report) {
                    eprintln!("conduit: error: {e}");
                    return ExitCode::from(crate::cli::EXIT_ERROR);
                }
            } else {
                out(&report.text());
            }
            ExitCode::from(if report.ready { 0 } else { 1 })
        }
        HostCommand::List { json, class, id } => {
            let id = match id.as_deref().map(PciId::parse).transpose() {
                Ok(id) => id,
                Err(e) => return fail(e),
            };
            let filter = list_filter(class, id);
            let reports = match inventory::list(&root, &filter) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if json {
                if let Err(e) = print_json(&reports) {
                    eprintln!("conduit: error: {e}");
                    return ExitCode::from(crate::cli::EXIT_ERROR);
                }
            } else if reports.is_empty() {
                outln!(
                    "no matching PCI device{}",
                    if filter.all_classes {
                        ""
                    } else {
                        " (display controllers only; --class all lists everything)"
                    }
                );
            } else {
                out(&inventory::render_text(&reports));
            }
            ExitCode::SUCCESS
        }
        HostCommand::Bind {
            target,
            count,
            force,
        } => {
            let target = match BindTarget::parse(&target) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            if count.is_some() && matches!(target, BindTarget::Address(_)) {
                eprintln!("conduit: error: --count goes with a VENDOR:DEVICE id, not an address");
                return ExitCode::from(crate::cli::EXIT_ERROR);
            }
            match bind::bind(
                &root,
                &target,
                BindOptions { count, force },
                &mut SysfsKernel,
            ) {
                Ok(plan) => {
                    for g in &plan.groups {
                        for u in &g.forced {
                            eprintln!("conduit: warning: --force: binding although {u}");
                        }
                        let mut parts: Vec<String> = g
                            .moves
                            .iter()
                            .map(|m| {
                                format!(
                                    "{} {} -> vfio-pci",
                                    m.address,
                                    m.from.as_deref().unwrap_or("(no driver)")
                                )
                            })
                            .collect();
                        parts.extend(g.already.iter().map(|a| format!("{a} already on vfio-pci")));
                        parts.extend(g.bridges.iter().map(|a| format!("{a} (bridge) left alone")));
                        outln!("IOMMU group {}: {}", g.group, parts.join(", "));
                    }
                    if !plan.is_noop() {
                        outln!(
                            "original drivers recorded in {}",
                            root.state_file().display()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        HostCommand::Peek {
            address,
            bar,
            offset,
        } => match peek::peek(&root, &address, PeekAt { bar, offset }) {
            Ok(value) => {
                if value == u32::MAX {
                    eprintln!(
                        "conduit: warning: {address} BAR{bar} + {offset:#x} reads as all-ones: the \
                         device does not answer (powered off, in reset, or its BAR is not decoded)"
                    );
                }
                outln!("{value:#010x}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        HostCommand::Unbind { address, all } => {
            let target = if all {
                UnbindTarget::All
            } else {
                match address.as_deref().map(normalize_address) {
                    Some(Ok(a)) => UnbindTarget::Address(a),
                    Some(Err(e)) => return fail(e),
                    None => UnbindTarget::All,
                }
            };
            match bind::unbind(&root, &target, &mut SysfsKernel) {
                Ok(done) => {
                    if done.is_empty() {
                        outln!(
                            "nothing to restore: {} records no device",
                            root.state_file().display()
                        );
                    }
                    for r in &done {
                        let to = r.to.as_deref().unwrap_or("(no driver)");
                        if r.steps.is_empty() {
                            outln!("{}: already back ({to}); record dropped", r.address);
                        } else {
                            outln!("{}: vfio-pci -> {to}", r.address);
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::testutil::{good, FakeHost};
    use super::*;

    #[derive(Parser, Debug)]
    struct Wrap {
        #[command(flatten)]
        host: HostArgs,
    }

    fn parse(args: &[&str]) -> Result<HostArgs, clap::Error> {
        Wrap::try_parse_from(std::iter::once("host").chain(args.iter().copied())).map(|w| w.host)
    }

    #[test]
    fn arguments() {
        match parse(&["check", "--memory", "64G", "--json"])
            .unwrap()
            .command
        {
            HostCommand::Check { json, memory } => assert!(json && memory == 64 << 30),
            c => panic!("{c:?}"),
        }
        match parse(&["check"]).unwrap().command {
            HostCommand::Check { json, memory } => assert!(!json && memory == 1 << 30),
            c => panic!("{c:?}"),
        }
        match parse(&["list", "--class", "all", "--id", "10de:2335"])
            .unwrap()
            .command
        {
            HostCommand::List { json, class, id } => {
                assert!(
                    !json && class == Some(ClassFilter::All) && id.as_deref() == Some("10de:2335")
                )
            }
            c => panic!("{c:?}"),
        }
        match parse(&["bind", "10de:2335", "--count", "2", "--force"])
            .unwrap()
            .command
        {
            HostCommand::Bind {
                target,
                count,
                force,
            } => {
                assert!(target == "10de:2335" && count == Some(2) && force)
            }
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            parse(&["unbind", "--all"]).unwrap().command,
            HostCommand::Unbind {
                address: None,
                all: true
            }
        ));
        match parse(&["peek", "17:00.0", "--bar", "2", "--offset", "0x100"])
            .unwrap()
            .command
        {
            HostCommand::Peek {
                address,
                bar,
                offset,
            } => assert!(address == "17:00.0" && bar == 2 && offset == 0x100),
            c => panic!("{c:?}"),
        }
        match parse(&["peek", "17:00.0"]).unwrap().command {
            HostCommand::Peek { bar, offset, .. } => assert!(bar == 0 && offset == 0),
            c => panic!("{c:?}"),
        }
        assert!(parse(&["peek", "17:00.0", "--offset", "sixteen"]).is_err());
        assert!(parse(&["unbind"]).is_err());
        assert!(parse(&["unbind", "01:00.0", "--all"]).is_err());
        assert!(parse(&["list", "--class", "nic"]).is_err());
        assert!(parse(&["check", "--memory", "lots"]).is_err());
    }

    #[test]
    fn list_with_an_id_shows_every_class_unless_told() {
        let nvme = PciId::parse("1b36:0010").ok();
        assert!(list_filter(None, nvme).all_classes);
        assert!(!list_filter(None, None).all_classes);
        assert!(!list_filter(Some(ClassFilter::Gpu), nvme).all_classes);
        assert!(list_filter(Some(ClassFilter::All), None).all_classes);
    }

    #[test]
    fn exit_status_follows_readiness() {
        let h = FakeHost::new();
        let root = h.p("/");
        let run = |args: &[&str]| {
            let mut a = parse(args).unwrap();
            a.host_root = root.clone();
            main(a)
        };
        // No IOMMU: not ready.
        assert_eq!(run(&["check"]), ExitCode::from(1));
        assert_eq!(run(&["list", "--class", "all"]), ExitCode::SUCCESS);
        assert!(matches!(
            parse(&["list"]).unwrap().command,
            HostCommand::List { class: None, .. }
        ));
        assert_eq!(
            run(&["bind", "01:00.0"]),
            ExitCode::from(crate::cli::EXIT_ERROR)
        );
        assert_eq!(run(&["unbind", "--all"]), ExitCode::SUCCESS);
        assert_eq!(
            run(&["peek", "01:00.0"]),
            ExitCode::from(crate::cli::EXIT_ERROR)
        );
        // Everything in place: ready.
        let h = good();
        let mut a = parse(&["check", "--json"]).unwrap();
        a.host_root = h.p("/");
        assert_eq!(main(a), ExitCode::SUCCESS);
    }
}
