//! The PC platform devices every VM gets, wired to the buses and to KVM interrupt lines.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use boot::layout;
use devices::acpi_pm::{AcpiPm, PM1_BLOCK_LEN};
use devices::i8042::{I8042, I8042_PORT, I8042_PORT_LEN};
use devices::rtc::{Rtc, RTC_PORT, RTC_PORT_LEN};
use devices::serial::{SerialDevice, SERIAL_PORT_LEN};
use devices::{BusError, EventFdTrigger};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::config::SerialMode;
use crate::vcpu::{IoBuses, VmEvents};

/// Errors while creating platform devices.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The serial output file cannot be opened.
    #[error("cannot open serial output file {path}: {source}")]
    SerialFile {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// An eventfd could not be created or cloned.
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// KVM refused an irqfd.
    #[error("cannot connect {what} to GSI {gsi}: {source}")]
    Irqfd {
        /// Which device.
        what: &'static str,
        /// The GSI.
        gsi: u32,
        /// Underlying error.
        source: kvm_ioctls::Error,
    },
    /// A device range clashed on a bus.
    #[error("cannot place {what} on the bus: {source}")]
    Bus {
        /// Which device.
        what: &'static str,
        /// Underlying error.
        source: BusError,
    },
}

/// Handles to the platform devices the VMM talks to after boot.
pub struct Platform {
    /// COM1, for console input.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// ACPI PM registers, for the power button.
    pub pm: Arc<Mutex<AcpiPm>>,
}

fn irq_line(vm: &VmFd, what: &'static str, gsi: u32) -> Result<EventFdTrigger, PlatformError> {
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(PlatformError::EventFd)?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|source| PlatformError::Irqfd { what, gsi, source })?;
    Ok(EventFdTrigger::new(evt))
}

fn clone_evt(evt: &EventFd) -> Result<EventFdTrigger, PlatformError> {
    Ok(EventFdTrigger::new(
        evt.try_clone().map_err(PlatformError::EventFd)?,
    ))
}

fn serial_output(mode: &SerialMode) -> Result<Box<dyn Write + Send>, PlatformError> {
    Ok(match mode {
        SerialMode::Stdio => Box::new(std::io::stdout()),
        SerialMode::Off => Box::new(std::io::sink()),
        SerialMode::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| PlatformError::SerialFile {
                    path: path.clone(),
                    source,
                })?,
        ),
    })
}

/// Creates COM1, the i8042, the RTC and the ACPI PM block and puts them on the PIO bus.
pub fn attach(
    vm: &VmFd,
    buses: &IoBuses,
    events: &VmEvents,
    serial: &SerialMode,
) -> Result<Platform, PlatformError> {
    let out = serial_output(serial)?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irq_line(vm, "COM1", layout::COM1_IRQ)?,
        out,
    )));
    let pm = Arc::new(Mutex::new(AcpiPm::new(
        irq_line(vm, "the ACPI SCI", layout::SCI_IRQ)?,
        clone_evt(&events.poweroff)?,
    )));
    let i8042 = Arc::new(Mutex::new(I8042::new(clone_evt(&events.reset)?)));
    let rtc = Arc::new(Mutex::new(Rtc::new()));

    let mut pio = buses.pio.write().unwrap_or_else(|p| p.into_inner());
    let place =
        |r: Result<(), BusError>, what| r.map_err(|source| PlatformError::Bus { what, source });
    place(
        pio.insert(serial.clone(), layout::COM1_PORT.into(), SERIAL_PORT_LEN),
        "COM1",
    )?;
    place(
        pio.insert(i8042, I8042_PORT.into(), I8042_PORT_LEN),
        "i8042",
    )?;
    place(pio.insert(rtc, RTC_PORT.into(), RTC_PORT_LEN), "RTC")?;
    place(
        pio.insert(pm.clone(), layout::PM1A_EVT_PORT.into(), PM1_BLOCK_LEN),
        "ACPI PM",
    )?;
    Ok(Platform { serial, pm })
}
