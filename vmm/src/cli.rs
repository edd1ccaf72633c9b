//! Command-line front end: `conduit run ...`, `conduit host ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, GuestImage, OnReboot, SerialMode, VmConfig};
use crate::event_loop::Outcome;

/// Exit status when the guest powered off.
pub const EXIT_POWEROFF: u8 = 0;
/// Exit status for any error (bad input, host problem, vCPU failure).
pub const EXIT_ERROR: u8 = 1;
/// Exit status when the guest rebooted and `--on-reboot exit` was in force.
pub const EXIT_REBOOT: u8 = 3;
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
    /// Check, inventory and prepare this host for passthrough.
    Host(crate::host::HostArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Kernel image: bzImage or ELF vmlinux.
    #[arg(long)]
    kernel: PathBuf,
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
    #[arg(long = "device", value_name = "ADDRESS")]
    devices: Vec<String>,
}

impl RunArgs {
    fn into_config(self) -> VmConfig {
        VmConfig {
            guest: GuestImage::Linux {
                kernel: self.kernel,
                initramfs: self.initramfs,
                cmdline: self.cmdline,
            },
            cpus: self.cpus,
            memory_bytes: self.memory,
            hugepages: self.hugepages,
            serial: self.serial,
            on_reboot: self.on_reboot,
            devices: self.devices,
        }
    }
}

/// Maps how the VM stopped to the process exit status.
pub fn exit_status(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::PowerOff => EXIT_POWEROFF,
        Outcome::Reset => EXIT_REBOOT,
        Outcome::Signal(s) => EXIT_SIGNAL_BASE.saturating_add(*s as u8),
        Outcome::VcpuFailed(_) => EXIT_ERROR,
    }
}

/// Entry point of the `conduit` binary.
pub fn main() -> ExitCode {
    crate::logger::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Host(args) => crate::host::main(args),
        Command::Run(args) => {
            let config = args.into_config();
            match crate::vm::run(&config) {
                Ok(outcome) => {
                    match &outcome {
                        Outcome::PowerOff => eprintln!("conduit: guest powered off"),
                        Outcome::Reset => eprintln!("conduit: guest rebooted (--on-reboot exit)"),
                        Outcome::Signal(s) => eprintln!("conduit: stopped by signal {s}"),
                        Outcome::VcpuFailed(m) => eprintln!("conduit: error: {m}"),
                    }
                    ExitCode::from(exit_status(&outcome))
                }
                Err(e) => {
                    eprintln!("conduit: error: {e}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
    }
}
