//! A host PCI function passed through with VFIO, as the guest's PCI bus sees it.
//!
//! Config space: reads come from the device, with the BAR/ROM registers answered by a shadow
//! (sizing included), the MSI-X control word and the MSI capability virtualized, INTx hidden
//! (the device is driven through MSI-X or MSI), and extended capabilities we cannot support
//! turned into null entries. Writes to the shadowed registers stay here; the rest go to the
//! device. Guest BAR moves are checked ([`super::bar_guard`]) before they are mapped; MSI-X
//! takes precedence over MSI ([`super::interrupt_mode`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use pci::{
    BarKind, BarRegion, BarSpec, ConfigSpace, ConfigWriteOutcome, MsiConfig, MsiLayout, MsixConfig,
    MsixLayout, PciDevice, PciHeader,
};
use vfio_ioctls::VfioDevice;

use super::bar_guard::BarGuard;
use super::bars::{mappable_areas, BarError, BarMapping};
use super::device_io::VfioDeviceIo;
use super::dma_gate::DmaGate;
use super::group::HostDevice;
use super::interrupt_mode::{without_bit, written_bit, MSIX_ENABLE_BIT, MSI_ENABLE_BIT};
use super::intx::Intx;
use super::irq::{VfioVectors, INTX_IRQ_INDEX, MSIX_IRQ_INDEX, MSI_IRQ_INDEX};
use super::p2p::{DmaRange, P2pDma, P2pError};
use super::reset::reset_device;
use super::rom::{RomChoice, RomImage};
use crate::vm_hooks::{BarPlacement, DmaMapper, IrqRouting, MemslotMapper};

const CONFIG_REGION: u32 = vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX;
const ROM_REGION: u32 = vfio_bindings::bindings::vfio::VFIO_PCI_ROM_REGION_INDEX;
const REGION_FLAG_MMAP: u32 = vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_MMAP;
const IRQ_INFO_NORESIZE: u32 = vfio_bindings::bindings::vfio::VFIO_IRQ_INFO_NORESIZE;
const CAP_ID_MSI: u8 = 0x05;
const CAP_ID_MSIX: u8 = 0x11;
const BARS: Range<u16> = 0x10..0x28;
const ROM_REG: Range<u16> = 0x30..0x34;
const COMMAND: Range<u16> = 0x04..0x08;
/// Bus Master Enable in the command register.
const BUS_MASTER_BIT: u16 = 2;
const INTERRUPT_PIN: u16 = 0x3d;
const PAGE_SIZE: u64 = 4096;

/// Extended capabilities a guest must not see on a passthrough function: they describe
/// host-side resources (SR-IOV VFs, ATS/PRI/PASID with the host IOMMU, resizable BARs whose
/// size the VMM fixed) or need emulation we do not provide.
const HIDDEN_EXT_CAPS: &[u16] = &[
    0x000f, // ATS
    0x0010, // SR-IOV
    0x0012, // Multicast
    0x0013, // Page Request (PRI)
    0x0015, // Resizable BAR
    0x001b, // PASID
    0x001d, // DPC
    0x0024, // VF Resizable BAR
];

/// Errors while attaching a passthrough device.
#[derive(Debug, thiserror::Error)]
pub enum VfioPciError {
    /// The device's config space is unusable.
    #[error("{device}: {reason}")]
    Config {
        /// Device address.
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// No room for a BAR in the guest's PCI windows.
    #[error("{device}: no room for BAR{bar} ({size:#x} bytes) in the guest's {window} PCI window")]
    NoBarSpace {
        /// Device address.
        device: String,
        /// BAR index.
        bar: u8,
        /// Size.
        size: u64,
        /// Which window.
        window: &'static str,
    },
    /// No room for the expansion ROM of a `rom=` file.
    #[error("{device}: no room for the expansion ROM ({size:#x} bytes for the {len}-byte ROM file) in the guest's 32-bit PCI window")]
    NoRomSpace {
        /// Device address.
        device: String,
        /// ROM BAR size.
        size: u64,
        /// File size.
        len: u64,
    },
    /// Mapping a BAR.
    #[error(transparent)]
    Bar(#[from] BarError),
    /// DMA-mapping a BAR for peer-to-peer DMA.
    #[error(transparent)]
    P2p(#[from] P2pError),
    /// Eventfds for the vectors.
    #[error("{device}: cannot create MSI-X eventfds: {source}")]
    EventFd {
        /// Device address.
        device: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// Chooses the guest address of a BAR (kind, size, prefetchable) → address.
pub type BarPlacer<'a> = dyn FnMut(BarKind, u64, bool) -> Option<u64> + 'a;

/// The per-device choices of a passthrough device (`--device BDF,p2p=on,rom=PATH`).
#[derive(Default)]
pub struct DeviceOptions {
    /// DMA-map the BARs' mmapped areas at their guest addresses with this mapper, for
    /// peer-to-peer DMA from the other passthrough devices (`p2p=on`); none by default.
    pub p2p: Option<Arc<dyn DmaMapper>>,
    /// The expansion ROM the guest sees.
    pub rom: RomChoice,
}

struct Msix {
    config: MsixConfig,
    vectors: VfioVectors,
    table_bar: u8,
    pba_bar: u8,
}

struct Msi {
    config: MsiConfig,
    vectors: VfioVectors,
    /// Config bytes of the capability.
    range: Range<u16>,
}

/// A passthrough PCI function.
pub struct VfioPciDevice {
    name: String,
    vfio: Box<dyn VfioDeviceIo>,
    shadow: ConfigSpace,
    /// Byte overrides of the device's config space (capability links, hidden entries).
    overrides: BTreeMap<u16, u8>,
    msix: Option<Msix>,
    msi: Option<Msi>,
    intx: Option<Intx>,
    /// The device's interrupt pin (1 = INTA), 0 for none.
    intx_pin: u8,
    routing: Arc<dyn IrqRouting>,
    mappings: Vec<BarMapping>,
    mapper: Arc<dyn MemslotMapper>,
    guard: BarGuard,
    /// Where Bus Master Enable waits for guest RAM's IOMMU mapping (none: mapped already).
    dma_gate: Option<Arc<DmaGate>>,
    /// IOMMU mappings of the BARs (`p2p=on`).
    p2p: Option<P2pDma>,
    /// The ROM image from a file, if the guest reads that instead of the device's ROM.
    rom_image: Option<RomImage>,
    shut_down: bool,
}

fn read_u32(cfg: &[u8], at: usize) -> u32 {
    cfg.get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl VfioPciDevice {
    /// Resets the device, reads its config space, places its BARs with `place`, maps them
    /// (in the IOMMU too with `p2p`), sets up its ROM and prepares MSI-X.
    pub fn new(
        host: &HostDevice,
        vfio: Arc<VfioDevice>,
        routing: Arc<dyn IrqRouting>,
        mapper: Arc<dyn MemslotMapper>,
        place: &mut BarPlacer<'_>,
        options: DeviceOptions,
    ) -> Result<Self, VfioPciError> {
        Self::with_io(
            host.address.clone(),
            Box::new(vfio),
            routing,
            mapper,
            place,
            options,
        )
    }

    /// As [`Self::new`] over any [`VfioDeviceIo`] (tests and fuzzing use an in-memory
    /// device); `name` is the device address used in errors.
    pub fn with_io(
        name: String,
        vfio: Box<dyn VfioDeviceIo>,
        routing: Arc<dyn IrqRouting>,
        mapper: Arc<dyn MemslotMapper>,
        place: &mut BarPlacer<'_>,
        options: DeviceOptions,
    ) -> Result<Self, VfioPciError> {
        let cfg_err = |reason: String| VfioPciError::Config {
            device: name.clone(),
            reason,
        };
        reset_device(&name, vfio.as_ref(), "attach");
        let cfg_size = vfio.region_size(CONFIG_REGION).min(4096) as usize;
        if cfg_size < 64 {
            return Err(cfg_err(format!("config region is only {cfg_size} bytes")));
        }
        let mut raw = vec![0u8; 4096];
        vfio.region_read(CONFIG_REGION, &mut raw[..cfg_size], 0);
        let header = PciHeader {
            vendor_id: u16::from_le_bytes([raw[0], raw[1]]),
            device_id: u16::from_le_bytes([raw[2], raw[3]]),
            revision_id: raw[8],
            class_code: read_u32(&raw, 8) >> 8,
            subsystem_vendor_id: u16::from_le_bytes([raw[0x2c], raw[0x2d]]),
            subsystem_id: u16::from_le_bytes([raw[0x2e], raw[0x2f]]),
            interrupt_pin: 0,
            multi_function: false,
        };
        if header.vendor_id == 0xffff {
            return Err(cfg_err(
                "config space reads all-ones: the device is not responding".into(),
            ));
        }
        let mut shadow = ConfigSpace::new(&header);
        let mut region_offsets = BTreeMap::new();
        let mut bar_specs = Vec::new();
        for (index, info) in pci::decode_bars(&raw) {
            let size = vfio.region_size(u32::from(index));
            if size == 0 {
                continue;
            }
            let size = size.next_power_of_two();
            let window = match info.kind {
                BarKind::Io => "I/O",
                BarKind::Mem32 => "32-bit",
                BarKind::Mem64 => "64-bit",
            };
            let addr =
                place(info.kind, size, info.prefetchable).ok_or(VfioPciError::NoBarSpace {
                    device: name.clone(),
                    bar: index,
                    size,
                    window,
                })?;
            shadow
                .add_bar(
                    index,
                    BarSpec {
                        kind: info.kind,
                        prefetchable: info.prefetchable,
                        size,
                        addr,
                    },
                )
                .map_err(|e| cfg_err(format!("BAR{index}: {e}")))?;
            region_offsets.insert(index, vfio.region_offset(u32::from(index)));
            bar_specs.push((index, info.kind, size, addr));
        }
        let mut rom_image = None;
        match options.rom {
            RomChoice::Device => {
                let rom_size = vfio.region_size(ROM_REGION);
                if rom_size > 0 {
                    let size = rom_size.next_power_of_two().max(2048);
                    match place(BarKind::Mem32, size, false) {
                        Some(addr) => shadow
                            .add_rom(size, addr)
                            .map_err(|e| cfg_err(format!("ROM: {e}")))?,
                        None => log::warn!(
                            "{name}: no room for its {size:#x}-byte expansion ROM in the guest's 32-bit PCI window: the guest sees none"
                        ),
                    }
                }
            }
            RomChoice::Hidden => {}
            RomChoice::Image(image) => {
                let size = image.bar_size();
                let addr = place(BarKind::Mem32, size, false).ok_or(VfioPciError::NoRomSpace {
                    device: name.clone(),
                    size,
                    len: image.len(),
                })?;
                shadow
                    .add_rom(size, addr)
                    .map_err(|e| cfg_err(format!("ROM: {e}")))?;
                rom_image = Some(image);
            }
        }

        // MSI and MSI-X virtualized; INTx hidden until `attach_intx` wires it; unsupported
        // extended capabilities nulled.
        let mut overrides = BTreeMap::new();
        let intx_pin = raw[usize::from(INTERRUPT_PIN)];
        let has_intx = vfio.irq_info(INTX_IRQ_INDEX).is_some_and(|i| i.count > 0);
        let intx_pin = if has_intx && (1..=4).contains(&intx_pin) {
            intx_pin
        } else {
            0
        };
        overrides.insert(INTERRUPT_PIN, 0);
        for ext in pci::extended_capabilities(&raw[..cfg_size]) {
            if HIDDEN_EXT_CAPS.contains(&ext.id) {
                let hdr = u32::from(ext.next) << 20; // id 0, version 0, same next
                for (k, b) in hdr.to_le_bytes().iter().enumerate() {
                    overrides.insert(ext.offset + k as u16, *b);
                }
            }
        }

        let msix = match pci::find_capability(&raw, CAP_ID_MSIX) {
            Some(off) => {
                let layout = MsixLayout::from_capability(&raw, off)
                    .map_err(|e| cfg_err(format!("MSI-X capability: {e}")))?;
                let config = MsixConfig::new(u16::from(off), layout)
                    .map_err(|e| cfg_err(format!("MSI-X capability: {e}")))?;
                let resizable = vfio
                    .irq_info(MSIX_IRQ_INDEX)
                    .is_some_and(|i| i.flags & IRQ_INFO_NORESIZE == 0);
                let vectors = VfioVectors::new(
                    MSIX_IRQ_INDEX,
                    &name,
                    layout.table_size,
                    routing.clone(),
                    vfio.irq_setter(),
                    resizable,
                )
                .map_err(|source| VfioPciError::EventFd {
                    device: name.clone(),
                    source,
                })?;
                Some(Msix {
                    config,
                    vectors,
                    table_bar: layout.table_bir,
                    pba_bar: layout.pba_bir,
                })
            }
            None => None,
        };

        let msi = match pci::find_capability(&raw, CAP_ID_MSI) {
            Some(off) => {
                let layout = MsiLayout::from_capability(&raw, off)
                    .map_err(|e| cfg_err(format!("MSI capability: {e}")))?;
                let config = MsiConfig::new(u16::from(off), layout)
                    .map_err(|e| cfg_err(format!("MSI capability: {e}")))?;
                let vectors = VfioVectors::new(
                    MSI_IRQ_INDEX,
                    &name,
                    u16::from(layout.vectors),
                    routing.clone(),
                    vfio.irq_setter(),
                    false,
                )
                .map_err(|source| VfioPciError::EventFd {
                    device: name.clone(),
                    source,
                })?;
                let start = u16::from(off);
                Some(Msi {
                    config,
                    vectors,
                    range: start..start + layout.cap_len(),
                })
            }
            None => None,
        };

        let mut p2p = options.p2p.map(|m| P2pDma::new(&name, m));
        let mappings = map_bars(
            &name,
            vfio.as_ref(),
            &bar_specs,
            &region_offsets,
            msix.as_ref().map(|m| m.config.layout()),
            &mapper,
            p2p.as_mut(),
        )?;

        Ok(Self {
            name,
            vfio,
            shadow,
            overrides,
            msix,
            msi,
            intx: None,
            intx_pin,
            routing,
            mappings,
            mapper,
            guard: BarGuard::default(),
            dma_gate: None,
            p2p,
            rom_image,
            shut_down: false,
        })
    }

    /// Checks every later guest BAR move with `placement` (which already holds the claims
    /// of this device's BARs where they are now).
    pub fn set_bar_placement(&mut self, placement: Arc<dyn BarPlacement>) {
        self.guard.set_placement(placement, &self.shadow.bars());
    }

    /// From now on a guest write setting Bus Master Enable waits at `gate` until guest RAM
    /// is DMA-mapped; if that failed, bus mastering stays off.
    pub fn set_dma_gate(&mut self, gate: Arc<DmaGate>) {
        self.dma_gate = Some(gate);
    }

    /// A command-register write that sets Bus Master Enable, once guest RAM is mapped: the
    /// write as it is, or without that bit when the mapping failed.
    fn bus_master_when_mapped<'a>(&self, offset: u16, data: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(gate) = &self.dma_gate else {
            return Cow::Borrowed(data);
        };
        if written_bit(offset, data, COMMAND.start, BUS_MASTER_BIT) != Some(true) {
            return Cow::Borrowed(data);
        }
        if gate.is_pending() {
            log::debug!(
                "{}: Bus Master Enable waits for guest RAM's IOMMU mapping",
                self.name
            );
        }
        match gate.wait() {
            Ok(()) => Cow::Borrowed(data),
            Err(reason) => {
                log::error!(
                    "{}: Bus Master Enable refused: guest RAM is not DMA-mapped ({reason})",
                    self.name
                );
                Cow::Owned(without_bit(offset, data, COMMAND.start, BUS_MASTER_BIT))
            }
        }
    }

    /// Whether the BARs are DMA-mapped for peer-to-peer DMA (`p2p=on`).
    pub fn p2p(&self) -> bool {
        self.p2p.is_some()
    }

    /// The IOVA ranges DMA-mapped for peer-to-peer DMA now (empty without `p2p=on`).
    pub fn p2p_ranges(&self) -> Vec<DmaRange> {
        self.p2p.as_ref().map(P2pDma::ranges).unwrap_or_default()
    }

    /// Host address of the device (for errors and `vm.info`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// MSI-X vectors armed on the host.
    pub fn armed_vectors(&self) -> Vec<u16> {
        self.msix
            .as_ref()
            .map(|m| m.vectors.armed())
            .unwrap_or_default()
    }

    /// MSI vectors armed on the host.
    pub fn armed_msi_vectors(&self) -> Vec<u16> {
        self.msi
            .as_ref()
            .map(|m| m.vectors.armed())
            .unwrap_or_default()
    }

    /// The device's INTx pin (1 = INTA .. 4 = INTD), 0 when it has none.
    pub fn intx_pin(&self) -> u8 {
        self.intx_pin
    }

    /// Wires INTx to `gsi` (the `_PRT` route of the device's slot and pin), shows the pin to
    /// the guest and arms it while the guest uses neither MSI nor MSI-X.
    pub fn attach_intx(&mut self, gsi: u32) -> Result<(), VfioPciError> {
        if self.intx_pin == 0 {
            return Ok(());
        }
        let intx = Intx::new(
            &self.name,
            gsi,
            self.routing.clone(),
            self.vfio.irq_setter(),
        )
        .map_err(|source| VfioPciError::EventFd {
            device: self.name.clone(),
            source,
        })?;
        self.intx = Some(intx);
        self.overrides.insert(INTERRUPT_PIN, self.intx_pin);
        self.sync_intx();
        Ok(())
    }

    fn msi_in_use(&self) -> bool {
        self.msix.as_ref().is_some_and(|m| m.config.enabled())
            || self.msi.as_ref().is_some_and(|m| m.config.enabled())
    }

    /// INTx is armed exactly when neither MSI nor MSI-X is enabled by the guest.
    fn sync_intx(&mut self) {
        let want = !self.msi_in_use();
        if let Some(intx) = &mut self.intx {
            if want {
                if let Err(e) = intx.enable() {
                    log::warn!("{e}");
                }
            } else {
                intx.disable();
            }
        }
    }

    /// Checks the BAR moves of a config write, unmaps the BARs it parks, maps the moved ones
    /// at their new place, and returns the moves the vmm's buses are to follow.
    fn move_bars(&mut self, outcome: ConfigWriteOutcome) -> ConfigWriteOutcome {
        let vetted = self.guard.vet(&self.name, outcome);
        for index in &vetted.parked {
            if let Some(m) = self.mappings.iter_mut().find(|m| m.index == *index) {
                m.remove(&self.mapper);
            }
        }
        for mv in &vetted.accepted.bar_moves {
            if let Some(m) = self.mappings.iter_mut().find(|m| m.index == mv.index) {
                if let Err(e) = m.install(&self.name, mv.new_addr, &self.mapper) {
                    log::warn!("{e}");
                }
            }
        }
        if let Some(p2p) = &mut self.p2p {
            for e in p2p.follow(&vetted.accepted.bar_moves) {
                log::warn!("{e}");
            }
        }
        vetted.accepted
    }

    /// The guest enables MSI-X while MSI is on: MSI goes off first (MSI-X takes precedence,
    /// and VFIO arms one mode at a time).
    fn msi_off_for_msix(&mut self) {
        let Some(m) = &mut self.msi else { return };
        if !m.config.enabled() {
            return;
        }
        log::warn!(
            "{}: the guest enabled MSI-X while MSI was on: MSI turned off (MSI-X takes precedence)",
            self.name
        );
        let ctl = m.range.start + 2;
        let value = (m.config.control() & !(1 << MSI_ENABLE_BIT)).to_le_bytes();
        let (config, vectors) = (&mut m.config, &mut m.vectors);
        write_interrupt_cap(&mut self.intx, vectors, |v| {
            (config.write_config(ctl, &value, v), config.enabled())
        });
    }

    fn region_of(&self, bar: u8) -> u32 {
        if bar == pci::ROM_BAR_INDEX {
            ROM_REGION
        } else {
            u32::from(bar)
        }
    }
}

/// A guest write to the MSI or MSI-X capability: INTx off first (VFIO enables MSI/MSI-X only
/// with INTx off; the caller re-arms it if neither ends up enabled), the capability updated by
/// `write` (which returns the result and the guest's enable bit), the host's mode following.
fn write_interrupt_cap(
    intx: &mut Option<Intx>,
    vectors: &mut VfioVectors,
    write: impl FnOnce(&mut VfioVectors) -> (Result<(), pci::RouteError>, bool),
) {
    if let Some(intx) = intx {
        intx.disable();
    }
    let (result, enabled) = write(vectors);
    if let Err(e) = result {
        log::warn!("{e}");
    }
    if let Err(e) = vectors.set_guest_enabled(enabled) {
        log::warn!("{e}");
    }
}

fn overlaps(offset: u16, len: usize, r: &Range<u16>) -> bool {
    offset < r.end && usize::from(offset) + len > usize::from(r.start)
}

/// The access stays inside the 4 KiB config space (the config bus never sends one that
/// does not, but the offset type allows it).
fn in_config_space(offset: u16, len: usize) -> bool {
    usize::from(offset) + len <= pci::CONFIG_SPACE_SIZE
}

impl PciDevice for VfioPciDevice {
    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        if !in_config_space(offset, data.len()) {
            data.fill(0xff);
            return;
        }
        if overlaps(offset, data.len(), &BARS) || overlaps(offset, data.len(), &ROM_REG) {
            self.shadow.read(offset, data);
            return;
        }
        self.vfio
            .region_read(CONFIG_REGION, data, u64::from(offset));
        for (i, b) in data.iter_mut().enumerate() {
            if let Some(v) = self.overrides.get(&(offset + i as u16)) {
                *b = *v;
            }
        }
        if let Some(m) = &self.msix {
            m.config.read_config(offset, data);
        }
        if let Some(m) = &self.msi {
            m.config.read_config(offset, data);
        }
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> ConfigWriteOutcome {
        if !in_config_space(offset, data.len()) {
            return ConfigWriteOutcome::default();
        }
        if overlaps(offset, data.len(), &BARS) || overlaps(offset, data.len(), &ROM_REG) {
            let outcome = self.shadow.write(offset, data);
            return self.move_bars(outcome);
        }
        let msix_enabled = self.msix.as_ref().is_some_and(|m| m.config.enabled());
        if let Some(ctl) = self.msix.as_ref().map(|m| m.config.cap_offset() + 2) {
            if !msix_enabled && written_bit(offset, data, ctl, MSIX_ENABLE_BIT) == Some(true) {
                self.msi_off_for_msix();
            }
        }
        if let Some(m) = &mut self.msix {
            let ctl = m.config.cap_offset() + 2..m.config.cap_offset() + 4;
            if overlaps(offset, data.len(), &ctl) {
                let (config, vectors) = (&mut m.config, &mut m.vectors);
                write_interrupt_cap(&mut self.intx, vectors, |v| {
                    (config.write_config(offset, data, v), config.enabled())
                });
                self.sync_intx();
                return ConfigWriteOutcome::default();
            }
        }
        if let Some(m) = &mut self.msi {
            if overlaps(offset, data.len(), &m.range) {
                let ctl = m.range.start + 2;
                let mut data = data.to_vec();
                if msix_enabled && written_bit(offset, &data, ctl, MSI_ENABLE_BIT) == Some(true) {
                    log::warn!(
                        "{}: MSI enable ignored while MSI-X is on (MSI-X takes precedence)",
                        self.name
                    );
                    data = without_bit(offset, &data, ctl, MSI_ENABLE_BIT);
                }
                let (config, vectors) = (&mut m.config, &mut m.vectors);
                write_interrupt_cap(&mut self.intx, vectors, |v| {
                    (config.write_config(offset, &data, v), config.enabled())
                });
                self.sync_intx();
                return ConfigWriteOutcome::default();
            }
        }
        let mut outcome = ConfigWriteOutcome::default();
        let data = if overlaps(offset, data.len(), &COMMAND) {
            let data = self.bus_master_when_mapped(offset, data);
            let moved = self.shadow.write(offset, &data);
            outcome = self.move_bars(moved);
            data
        } else {
            Cow::Borrowed(data)
        };
        self.vfio
            .region_write(CONFIG_REGION, &data, u64::from(offset));
        outcome
    }

    fn bars(&self) -> Vec<BarRegion> {
        self.shadow.bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if self.guard.is_parked(bar) {
            data.fill(0xff);
            return;
        }
        if let Some(m) = &self.msix {
            let l = m.config.layout();
            if bar == m.table_bar && l.table_range().contains(&offset) {
                m.config.read_table(offset - l.table_range().start, data);
                return;
            }
            if bar == m.pba_bar && l.pba_range().contains(&offset) {
                m.config.read_pba(offset - l.pba_range().start, data);
                return;
            }
        }
        if bar == pci::ROM_BAR_INDEX {
            if let Some(image) = &self.rom_image {
                image.read(offset, data);
                return;
            }
        }
        self.vfio.region_read(self.region_of(bar), data, offset);
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if self.guard.is_parked(bar) {
            return;
        }
        if let Some(m) = &mut self.msix {
            let l = *m.config.layout();
            if bar == m.table_bar && l.table_range().contains(&offset) {
                if let Err(e) =
                    m.config
                        .write_table(offset - l.table_range().start, data, &mut m.vectors)
                {
                    log::warn!("{e}");
                }
                return;
            }
            if bar == m.pba_bar && l.pba_range().contains(&offset) {
                return; // the PBA is read-only
            }
        }
        if bar == pci::ROM_BAR_INDEX {
            return;
        }
        self.vfio.region_write(self.region_of(bar), data, offset);
    }
}

impl VfioPciDevice {
    /// Quiesces the device for teardown: interrupts disarmed, BARs unmapped from the IOMMU
    /// (p2p), BAR memslots removed and unmapped, device reset. Idempotent; also done on drop.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        if let Some(m) = &mut self.msix {
            m.vectors.shutdown();
        }
        if let Some(m) = &mut self.msi {
            m.vectors.shutdown();
        }
        if let Some(intx) = &mut self.intx {
            intx.disable();
        }
        if let Some(p2p) = &mut self.p2p {
            p2p.unmap_all();
        }
        for m in &mut self.mappings {
            m.remove(&self.mapper);
        }
        self.mappings.clear();
        reset_device(&self.name, self.vfio.as_ref(), "teardown");
    }
}

impl Drop for VfioPciDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// mmaps every mappable area of the memory BARs in `specs` (index, kind, size, guest
/// address), leaving the MSI-X table and PBA pages to trap, installs them as memslots and,
/// with `p2p`, maps them in the IOMMU. On error nothing stays installed or mapped.
fn map_bars(
    name: &str,
    vfio: &dyn VfioDeviceIo,
    specs: &[(u8, BarKind, u64, u64)],
    region_offsets: &BTreeMap<u8, u64>,
    msix: Option<&MsixLayout>,
    mapper: &Arc<dyn MemslotMapper>,
    mut p2p: Option<&mut P2pDma>,
) -> Result<Vec<BarMapping>, VfioPciError> {
    let mut mappings: Vec<BarMapping> = Vec::new();
    let result = (|| {
        for &(index, kind, _size, addr) in specs {
            let flags = vfio.region_flags(u32::from(index));
            if kind == BarKind::Io || flags & REGION_FLAG_MMAP == 0 {
                continue;
            }
            let sparse = vfio.region_sparse_areas(u32::from(index));
            let mut traps = Vec::new();
            if let Some(l) = msix {
                if l.table_bir == index {
                    traps.push(l.table_range());
                }
                if l.pba_bir == index {
                    traps.push(l.pba_range());
                }
            }
            let region_size = vfio.region_size(u32::from(index));
            let areas = mappable_areas(region_size, sparse.as_deref(), &traps, PAGE_SIZE);
            if areas.is_empty() {
                continue;
            }
            let mut m =
                BarMapping::mmap(name, vfio.mmap_fd(), index, region_offsets[&index], &areas)?;
            m.install(name, addr, mapper)?;
            mappings.push(m);
            let m = &mappings[mappings.len() - 1];
            if let Some(p2p) = p2p.as_deref_mut() {
                p2p.map_bar(index, addr, m.dma_areas())?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(mappings),
        Err(e) => {
            if let Some(p2p) = p2p {
                p2p.unmap_all();
            }
            for m in &mut mappings {
                m.remove(mapper);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::fake::{bar_placer, FakeKvm, FakeVfioDevice, KvmState};
    use pci::msix::{MSIX_CONTROL_ENABLE, MSIX_CONTROL_FUNCTION_MASK};

    const MSIX_CAP: u16 = 0xb0;
    const MSI_CAP: u16 = 0x48;
    const TABLE: u64 = 0xb9_0000;
    const PBA: u64 = 0xba_0000;

    fn h200() -> (VfioPciDevice, FakeVfioDevice, Arc<FakeKvm>) {
        let fake = FakeVfioDevice::h200().unwrap_or_else(|e| {
            panic!(
                "H200 fixture in {}: {e}",
                crate::vfio::fake::h200_fixture_dir().display()
            )
        });
        let kvm = Arc::new(FakeKvm::new());
        let mut place = bar_placer();
        let dev = VfioPciDevice::with_io(
            "0000:41:00.0".into(),
            Box::new(fake.clone()),
            kvm.clone(),
            kvm.clone(),
            &mut place,
            DeviceOptions::default(),
        )
        .unwrap();
        (dev, fake, kvm)
    }

    fn read32(d: &mut VfioPciDevice, offset: u16) -> u32 {
        let mut b = [0u8; 4];
        d.read_config(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn write32(d: &mut VfioPciDevice, offset: u16, v: u32) -> ConfigWriteOutcome {
        d.write_config(offset, &v.to_le_bytes())
    }

    fn table_write(d: &mut VfioPciDevice, offset: u64, v: u32) {
        d.bar_write(0, TABLE + offset, &v.to_le_bytes());
    }

    fn table_read(d: &mut VfioPciDevice, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        d.bar_read(0, TABLE + offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn h200_bars_are_shadowed_and_size_like_the_device() {
        let (mut d, fake, _kvm) = h200();
        assert_eq!(fake.resets(), 1, "reset before reading config");
        let bars: Vec<(u8, BarKind, u64)> =
            d.bars().iter().map(|b| (b.index, b.kind, b.size)).collect();
        assert_eq!(
            bars,
            [
                (0, BarKind::Mem64, 16 << 20),
                (2, BarKind::Mem64, 256 << 30),
                (4, BarKind::Mem64, 32 << 20)
            ]
        );
        for b in d.bars() {
            assert_eq!(b.addr % b.size, 0, "BAR{} aligned", b.index);
            let reg = 0x10 + 4 * u16::from(b.index);
            // Sizing: all-ones to both halves reads back the size mask and the type bits.
            write32(&mut d, reg, u32::MAX);
            write32(&mut d, reg + 4, u32::MAX);
            let mask = u64::from(read32(&mut d, reg + 4)) << 32 | u64::from(read32(&mut d, reg));
            assert_eq!(mask & !0xf, !(b.size - 1), "BAR{}", b.index);
            assert_eq!(mask & 0xf, 0xc, "64-bit prefetchable");
        }
        // The device's own BAR registers were never written.
        assert_eq!(
            fake.config()[0x10..0x28],
            FakeVfioDevice::h200().unwrap().config()[0x10..0x28]
        );
        // Identity comes from the device; INTx is hidden until attached.
        assert_eq!(read32(&mut d, 0), 0x2335_10de);
        let mut pin = [0u8];
        d.read_config(INTERRUPT_PIN, &mut pin);
        assert_eq!(pin, [0]);
    }

    #[test]
    fn bus_master_enable_waits_for_the_dma_mapping_and_is_dropped_if_it_failed() {
        const BME: u16 = 1 << BUS_MASTER_BIT;
        let command =
            |fake: &FakeVfioDevice| u16::from_le_bytes([fake.config()[4], fake.config()[5]]);
        let (mut d, fake, _kvm) = h200();
        let gate = Arc::new(DmaGate::pending());
        d.set_dma_gate(gate.clone());
        // Memory decode alone does not wait.
        d.write_config(4, &2u16.to_le_bytes());
        assert_eq!(command(&fake) & (BME | 2), 2);
        let d = Arc::new(std::sync::Mutex::new(d));
        let writer = {
            let d = d.clone();
            std::thread::spawn(move || {
                d.lock().unwrap().write_config(4, &(2 | BME).to_le_bytes());
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !writer.is_finished(),
            "Bus Master Enable went through before the mapping"
        );
        assert_eq!(command(&fake) & BME, 0);
        gate.open();
        writer.join().unwrap();
        assert_eq!(command(&fake) & BME, BME);

        let (mut d, fake, _kvm) = h200();
        let gate = Arc::new(DmaGate::pending());
        gate.fail("RLIMIT_MEMLOCK".into());
        d.set_dma_gate(gate);
        // A dword write of command and status: the rest of the write still lands.
        write32(&mut d, 4, u32::from(2 | BME));
        assert_eq!(
            command(&fake) & (BME | 2),
            2,
            "memory decode on, bus master off"
        );
    }

    #[test]
    fn h200_msix_through_the_trapped_table() {
        let (mut d, fake, kvm) = h200();
        // Control word: 9 vectors, disabled (the capture had it enabled by its guest).
        assert_eq!(read32(&mut d, MSIX_CAP) >> 16, 8);
        write32(&mut d, MSIX_CAP, u32::from(MSIX_CONTROL_ENABLE) << 16);
        assert_eq!(fake.irq_mode(), (Some(MSIX_IRQ_INDEX), 1));
        assert!(d.armed_vectors().is_empty());
        // Vector 3: address, data, unmask.
        table_write(&mut d, 3 * 16, 0xfee0_1000);
        table_write(&mut d, 3 * 16 + 8, 0x4023);
        assert_eq!(table_read(&mut d, 3 * 16 + 12), 1, "starts masked");
        table_write(&mut d, 3 * 16 + 12, 0);
        assert_eq!(d.armed_vectors(), [3]);
        assert_eq!(fake.irq_mode(), (Some(MSIX_IRQ_INDEX), 4));
        assert_eq!(table_read(&mut d, 3 * 16), 0xfee0_1000);
        let mut pba = [0u8; 8];
        d.bar_read(0, PBA, &mut pba);
        assert_eq!(pba, [0; 8]);
        assert_eq!(kvm.state().irqfds.len(), 1);
        // Function mask drops the irqfd; VFIO keeps the trigger, so an interrupt while
        // masked waits in the eventfd and is injected when the irqfd returns.
        write32(
            &mut d,
            MSIX_CAP,
            u32::from(MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK) << 16,
        );
        assert!(kvm.state().irqfds.is_empty());
        assert_eq!(d.armed_vectors(), [3]);
        write32(&mut d, MSIX_CAP, u32::from(MSIX_CONTROL_ENABLE) << 16);
        assert_eq!(kvm.state().irqfds.len(), 1);
        write32(&mut d, MSIX_CAP, 0);
        assert_eq!(fake.irq_mode(), (None, 0));
        assert!(
            fake.refused_irq_calls().is_empty(),
            "{:?}",
            fake.refused_irq_calls()
        );
        assert!(kvm.misuse().is_empty(), "{:?}", kvm.misuse());
    }

    /// Found by fuzz target config_space: a read at 0xfffe overflowed the byte offsets
    /// (`offset + i as u16`) and panicked.
    #[test]
    fn accesses_past_the_config_space_read_all_ones_and_write_nothing() {
        let (mut d, fake, _kvm) = h200();
        let before = fake.config();
        for offset in [0xfff, 0xffe, 0x1000, 0xfffe, 0xffff] {
            let mut b = [0u8; 4];
            d.read_config(offset, &mut b);
            assert_eq!(b, [0xff; 4], "read at {offset:#x}");
            let out = d.write_config(offset, &[0; 4]);
            assert!(out.bar_moves.is_empty());
        }
        // The last dword and byte are still in range.
        let mut b = [0u8; 4];
        d.read_config(0xffc, &mut b);
        assert_eq!(b, before[0xffc..].as_ref());
        assert_eq!(fake.config(), before);
    }

    #[test]
    fn h200_msi_and_teardown_leave_nothing_behind() {
        let (mut d, fake, kvm) = h200();
        // MSI: 64-bit address, data, enable one vector.
        write32(&mut d, MSI_CAP + 4, 0xfee0_0000);
        write32(&mut d, MSI_CAP + 8, 0);
        write32(&mut d, MSI_CAP + 12, 0x41);
        write32(
            &mut d,
            MSI_CAP,
            u32::from(pci::msi::MSI_CONTROL_ENABLE) << 16,
        );
        assert_eq!(d.armed_msi_vectors(), [0]);
        assert_eq!(fake.irq_mode(), (Some(MSI_IRQ_INDEX), 1));
        d.shutdown();
        assert_eq!(fake.irq_mode(), (None, 0));
        assert_eq!(kvm.state(), KvmState::default());
        assert!(kvm.misuse().is_empty(), "{:?}", kvm.misuse());
        assert!(
            fake.refused_irq_calls().is_empty(),
            "{:?}",
            fake.refused_irq_calls()
        );
    }
}
