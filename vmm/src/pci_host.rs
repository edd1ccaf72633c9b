//! The guest's PCI segment: bus 0 with the host bridge at 00:00.0, reached through the
//! 0xCF8/0xCFC ports and through ECAM. Config writes that move a BAR are queued here and
//! applied to the buses by the vCPU thread once it has released the bus it exited on.

use std::sync::{Arc, Mutex};

use boot::layout;
use devices::{BusDevice, BusError};
use pci::{BarMove, ConfigWriteOutcome, HostBridge, PciBus, PciConfigIo, PciConfigMmio};

use crate::vcpu::IoBuses;

/// BAR moves requested by guest config writes, waiting to be applied.
pub type PendingBarMoves = Arc<Mutex<Vec<BarMove>>>;

/// Errors while setting up the PCI segment.
#[derive(Debug, thiserror::Error)]
pub enum PciHostError {
    /// The host bridge could not be placed.
    #[error("cannot add the PCI host bridge: {0}")]
    HostBridge(#[source] pci::Error),
    /// A config mechanism clashed on a bus.
    #[error("cannot place the PCI {what} on the bus: {source}")]
    Bus {
        /// Which mechanism.
        what: &'static str,
        /// Underlying error.
        source: BusError,
    },
}

fn queue(pending: &PendingBarMoves, outcome: ConfigWriteOutcome) {
    if !outcome.bar_moves.is_empty() {
        pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(outcome.bar_moves);
    }
}

/// 0xCF8-0xCFF on the PIO bus.
struct ConfigIoDevice {
    io: PciConfigIo,
    pending: PendingBarMoves,
}

impl BusDevice for ConfigIoDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        self.io.read(offset, data);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let outcome = self.io.write(offset, data);
        queue(&self.pending, outcome);
    }
}

/// ECAM on the MMIO bus.
struct EcamDevice {
    mmio: PciConfigMmio,
    pending: PendingBarMoves,
}

impl BusDevice for EcamDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        self.mmio.read(offset, data);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let outcome = self.mmio.write(offset, data);
        queue(&self.pending, outcome);
    }
}

/// The PCI segment of a VM.
pub struct PciSegment {
    /// Bus 0.
    pub bus: Arc<Mutex<PciBus>>,
    /// BAR moves not yet applied to the I/O buses.
    pub pending: PendingBarMoves,
}

/// Creates bus 0 with its host bridge and puts both config mechanisms on the buses.
pub fn attach(buses: &IoBuses) -> Result<PciSegment, PciHostError> {
    let mut bus = PciBus::new();
    bus.add_device(Arc::new(Mutex::new(HostBridge::new())))
        .map_err(PciHostError::HostBridge)?;
    let bus = Arc::new(Mutex::new(bus));
    let pending = buses.bar_moves.clone();
    let io = Arc::new(Mutex::new(ConfigIoDevice {
        io: PciConfigIo::new(bus.clone()),
        pending: pending.clone(),
    }));
    let ecam = Arc::new(Mutex::new(EcamDevice {
        mmio: PciConfigMmio::new(bus.clone()),
        pending: pending.clone(),
    }));
    buses
        .pio
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            io,
            layout::PCI_CONFIG_IO_PORT.into(),
            pci::PCI_CONFIG_IO_LEN,
        )
        .map_err(|source| PciHostError::Bus {
            what: "config ports",
            source,
        })?;
    buses
        .mmio
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(ecam, layout::PCI_ECAM_START, layout::PCI_ECAM_SIZE)
        .map_err(|source| PciHostError::Bus {
            what: "ECAM window",
            source,
        })?;
    Ok(PciSegment { bus, pending })
}
