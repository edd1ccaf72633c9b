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
    /// Pass through N devices ready for passthrough, by id or name: 10de:2335x4, h200x4
    /// (chosen on one NUMA node when possible, besides any --device).
    #[arg(long, value_name = "SPEC")]
    gpus: Option<String>,
}

impl RunArgs {
    /// Appends the devices `--gpus` selects on `root` to the `--device` list.
    fn add_gpus(&mut self, root: &crate::host::HostRoot) -> Result<(), crate::host::HostError> {
        if let Some(spec) = &self.gpus {
            let found = crate::host::select_devices_besides(root, spec, &self.devices)?;
            self.devices.extend(found);
        }
        Ok(())
    }

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
        Command::Run(mut args) => {
            if let Err(e) = args.add_gpus(&crate::host::HostRoot::system()) {
                eprintln!("conduit: error: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testutil::FakeHost;

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
        args.gpus = Some("1b36:0010x2".into());
        let err = args.add_gpus(&h.root()).unwrap_err().to_string();
        assert!(err.contains("2 wanted, 0 ready"), "{err}");
        let bad = Cli::try_parse_from(["conduit", "run", "--kernel", "k", "--gpus"]);
        assert!(bad.is_err());
    }
}
