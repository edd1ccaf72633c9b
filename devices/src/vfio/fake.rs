//! In-memory stand-ins for a VFIO device and for KVM, so that [`super::VfioPciDevice`] runs
//! in unit tests and fuzz targets (cargo feature `fake-vfio`; never in the normal build).
//!
//! - [`FakeVfioDevice`]: a config space image (e.g. the H200 fixture) whose bytes are
//!   read-only except those in a write mask, BAR regions of given sizes that read all-ones
//!   and drop writes (none mmappable, so every BAR access traps), and `VFIO_DEVICE_SET_IRQS`
//!   checked against vfio-pci's rules (one interrupt type active at a time, vector ranges
//!   within the index's count, MSI not grown while enabled) with refusals recorded.
//! - [`FakeKvm`]: GSI allocation, MSI routes and irqfds as sets, with misuse recorded
//!   (a route on a GSI never allocated, an irqfd registered twice or removed unregistered,
//!   a GSI released twice) and what is left after teardown visible.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use pci::{BarKind, MsiLayout, MsiMessage, MsixLayout};
use vmm_sys_util::eventfd::EventFd;

use super::device_io::{IrqInfo, VfioDeviceIo};
use super::irq::{IrqAction, IrqSetter, INTX_IRQ_INDEX, MSIX_IRQ_INDEX};
use crate::vm_hooks::{HookError, IrqRouting, MemslotMapper};

const CONFIG_REGION: u32 = vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX;
const REGION_FLAGS_RW: u32 = vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_READ
    | vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_WRITE;
const CONFIG_SIZE: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The directory of the H200 fixture: `shared/fixtures/h200` next to the repository or
/// next to a directory enclosing it (a git worktree under `wt/`), the nearest first.
pub fn h200_fixture_dir() -> PathBuf {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates: Vec<PathBuf> = crate_dir
        .ancestors()
        .skip(2)
        .map(|a| a.join("shared/fixtures/h200"))
        .collect();
    candidates
        .iter()
        .find(|c| c.is_dir())
        .unwrap_or(&candidates[0])
        .clone()
}

/// The H200 fixture: its 4 KiB config space and the sizes of BARs 0..=5 from its sysfs
/// `resource` file.
pub fn h200_fixture() -> std::io::Result<(Vec<u8>, [u64; 6])> {
    let dir = h200_fixture_dir();
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let config = std::fs::read(dir.join("config.bin"))?;
    if config.len() != CONFIG_SIZE {
        return Err(invalid(format!(
            "{}: {} bytes, expected a 4 KiB config space",
            dir.join("config.bin").display(),
            config.len()
        )));
    }
    let text = std::fs::read_to_string(dir.join("resource"))?;
    let resources = pci::parse_sysfs_resource(&text)
        .map_err(|e| invalid(format!("{}: {e}", dir.join("resource").display())))?;
    let mut sizes = [0u64; 6];
    for (size, r) in sizes.iter_mut().zip(&resources) {
        *size = r.size();
    }
    Ok((config, sizes))
}

/// A BAR placer for tests: a bump allocator over a 32-bit window at 3 GiB and a 64-bit
/// window at 1 TiB, each BAR naturally aligned.
pub fn bar_placer() -> impl FnMut(BarKind, u64, bool) -> Option<u64> {
    let mut next32 = 0xc000_0000u64;
    let mut next64 = 1u64 << 40;
    move |kind, size, _prefetchable| {
        let next = if kind == BarKind::Mem64 {
            &mut next64
        } else {
            &mut next32
        };
        let addr = next.checked_next_multiple_of(size)?;
        *next = addr.checked_add(size)?;
        Some(addr)
    }
}

/// The host interrupt mode vfio-pci is in: the active index and its vector count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct IrqMode {
    index: Option<u32>,
    vectors: u32,
}

#[derive(Debug)]
struct State {
    config: Mutex<Vec<u8>>,
    writable: Vec<u8>,
    bar_sizes: [u64; 6],
    irqs: [Option<IrqInfo>; 3],
    mode: Mutex<IrqMode>,
    refused: Mutex<Vec<String>>,
    resets: Mutex<u32>,
}

/// An in-memory VFIO PCI function (see the module docs).
#[derive(Clone, Debug)]
pub struct FakeVfioDevice {
    state: Arc<State>,
}

impl FakeVfioDevice {
    /// A device with this config space (up to 4 KiB; padded with zeroes) and BAR sizes
    /// (0 = no BAR). Its interrupt indexes follow the config space: INTx when the interrupt
    /// pin is set, MSI and MSI-X with the vector counts of their capabilities. The guest
    /// may write the command register, cache line size, latency timer and interrupt line.
    pub fn from_config(mut config: Vec<u8>, bar_sizes: [u64; 6]) -> Self {
        config.resize(CONFIG_SIZE, 0);
        let mut writable = vec![0u8; CONFIG_SIZE];
        writable[0x04..0x06].copy_from_slice(&0x0547u16.to_le_bytes());
        writable[0x0c] = 0xff;
        writable[0x0d] = 0xff;
        writable[0x3c] = 0xff;
        let intx = (config[0x3d] != 0).then_some(IrqInfo { count: 1, flags: 0 });
        let msi = pci::find_capability(&config, pci::capabilities::CAP_ID_MSI)
            .and_then(|o| MsiLayout::from_capability(&config, o).ok())
            .map(|l| IrqInfo {
                count: u32::from(l.vectors),
                flags: 0,
            });
        let msix = pci::find_capability(&config, pci::capabilities::CAP_ID_MSIX)
            .and_then(|o| MsixLayout::from_capability(&config, o).ok())
            .map(|l| IrqInfo {
                count: u32::from(l.table_size),
                flags: 0,
            });
        Self {
            state: Arc::new(State {
                config: Mutex::new(config),
                writable,
                bar_sizes,
                irqs: [intx, msi, msix],
                mode: Mutex::new(IrqMode::default()),
                refused: Mutex::new(Vec::new()),
                resets: Mutex::new(0),
            }),
        }
    }

    /// The H200 fixture as a device.
    pub fn h200() -> std::io::Result<Self> {
        let (config, sizes) = h200_fixture()?;
        Ok(Self::from_config(config, sizes))
    }

    /// The device's config space as it is now.
    pub fn config(&self) -> Vec<u8> {
        lock(&self.state.config).clone()
    }

    /// The `VFIO_DEVICE_SET_IRQS` calls vfio-pci would have refused, described.
    pub fn refused_irq_calls(&self) -> Vec<String> {
        lock(&self.state.refused).clone()
    }

    /// The interrupt index active on the host (`None`: INTx, MSI and MSI-X all off) and its
    /// vector count.
    pub fn irq_mode(&self) -> (Option<u32>, u32) {
        let m = *lock(&self.state.mode);
        (m.index, m.vectors)
    }

    /// How many times the device was reset.
    pub fn resets(&self) -> u32 {
        *lock(&self.state.resets)
    }
}

impl State {
    /// vfio-pci's checks of VFIO_DEVICE_SET_IRQS (trigger and unmask actions, eventfd or
    /// none data), applied to the interrupt mode.
    fn set_irqs(
        &self,
        index: u32,
        action: IrqAction,
        start: u32,
        fds: &[i32],
    ) -> Result<(), String> {
        let info = self
            .irqs
            .get(index as usize)
            .copied()
            .flatten()
            .ok_or_else(|| format!("index {index} does not exist"))?;
        let count = u32::try_from(fds.len()).map_err(|_| "too many fds".to_string())?;
        let end = start
            .checked_add(count)
            .filter(|&e| e <= info.count && (count > 0 || start < info.count))
            .ok_or_else(|| {
                format!(
                    "vectors {start}..{} of index {index}, which has {}",
                    u64::from(start) + u64::from(count),
                    info.count
                )
            })?;
        let mut mode = lock(&self.mode);
        let active = mode.index == Some(index);
        if action == IrqAction::Unmask {
            return match (index, active, count) {
                (INTX_IRQ_INDEX, true, 1) => Ok(()),
                _ => Err(format!("unmask of index {index} while {mode:?}")),
            };
        }
        if count == 0 {
            if !active {
                return Err(format!("disabling index {index} while {mode:?}"));
            }
            *mode = IrqMode::default();
            return Ok(());
        }
        if !active && mode.index.is_some() {
            return Err(format!("enabling index {index} while {mode:?}"));
        }
        if index == INTX_IRQ_INDEX && (start != 0 || count != 1) {
            return Err(format!("INTx with vectors {start}..{end}"));
        }
        if !active {
            *mode = IrqMode {
                index: Some(index),
                vectors: end,
            };
            return Ok(());
        }
        if end > mode.vectors {
            let resizable = index == MSIX_IRQ_INDEX
                && info.flags & vfio_bindings::bindings::vfio::VFIO_IRQ_INFO_NORESIZE == 0;
            if !resizable {
                return Err(format!(
                    "growing index {index} from {} to {end} vectors while enabled",
                    mode.vectors
                ));
            }
            mode.vectors = end;
        }
        Ok(())
    }
}

struct FakeIrqSetter(Arc<State>);

impl IrqSetter for FakeIrqSetter {
    fn set_irqs_action(
        &self,
        index: u32,
        action: IrqAction,
        start: u32,
        fds: &[i32],
    ) -> std::io::Result<()> {
        self.0.set_irqs(index, action, start, fds).map_err(|why| {
            lock(&self.0.refused).push(why.clone());
            std::io::Error::new(std::io::ErrorKind::InvalidInput, why)
        })
    }
}

impl VfioDeviceIo for FakeVfioDevice {
    fn reset(&self) -> std::io::Result<()> {
        *lock(&self.state.resets) += 1;
        Ok(())
    }

    fn region_size(&self, index: u32) -> u64 {
        match index {
            0..=5 => self.state.bar_sizes[index as usize],
            CONFIG_REGION => CONFIG_SIZE as u64,
            _ => 0,
        }
    }

    fn region_offset(&self, index: u32) -> u64 {
        u64::from(index) << 40
    }

    fn region_flags(&self, index: u32) -> u32 {
        if self.region_size(index) > 0 {
            REGION_FLAGS_RW
        } else {
            0
        }
    }

    fn region_sparse_areas(&self, _index: u32) -> Option<Vec<Range<u64>>> {
        None
    }

    fn irq_info(&self, index: u32) -> Option<IrqInfo> {
        self.state.irqs.get(index as usize).copied().flatten()
    }

    fn region_read(&self, index: u32, data: &mut [u8], offset: u64) {
        let inside = offset
            .checked_add(data.len() as u64)
            .is_some_and(|end| end <= self.region_size(index));
        if !inside {
            return;
        }
        if index == CONFIG_REGION {
            let config = lock(&self.state.config);
            let at = offset as usize; // < 4096
            data.copy_from_slice(&config[at..at + data.len()]);
        } else {
            data.fill(0xff);
        }
    }

    fn region_write(&self, index: u32, data: &[u8], offset: u64) {
        let inside = offset
            .checked_add(data.len() as u64)
            .is_some_and(|end| end <= self.region_size(index));
        if !inside || index != CONFIG_REGION {
            return;
        }
        let mut config = lock(&self.state.config);
        for (i, b) in data.iter().enumerate() {
            let o = offset as usize + i; // < 4096
            let w = self.state.writable[o];
            config[o] = (config[o] & !w) | (b & w);
        }
    }

    fn irq_setter(&self) -> Box<dyn IrqSetter> {
        Box::new(FakeIrqSetter(self.state.clone()))
    }

    fn mmap_fd(&self) -> RawFd {
        // No region is flagged mmappable, so nothing asks.
        -1
    }
}

#[derive(Debug, Default)]
struct Kvm {
    next_gsi: u32,
    gsis: BTreeSet<u32>,
    routes: BTreeMap<u32, MsiMessage>,
    irqfds: BTreeSet<(RawFd, u32)>,
    slots: BTreeSet<u32>,
    next_slot: u32,
    misuse: Vec<String>,
}

/// KVM's GSI routing, irqfds and memslots as sets (see the module docs).
#[derive(Debug, Default)]
pub struct FakeKvm {
    kvm: Mutex<Kvm>,
}

/// What [`FakeKvm`] holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvmState {
    /// Allocated GSIs.
    pub gsis: Vec<u32>,
    /// GSIs with an MSI route.
    pub routes: Vec<u32>,
    /// GSIs with an irqfd.
    pub irqfds: Vec<u32>,
    /// Memslots.
    pub slots: Vec<u32>,
}

impl FakeKvm {
    /// Nothing allocated; MSI GSIs start at 24 (after the IOAPIC pins).
    pub fn new() -> Self {
        Self {
            kvm: Mutex::new(Kvm {
                next_gsi: 24,
                ..Kvm::default()
            }),
        }
    }

    /// The misuses seen, described.
    pub fn misuse(&self) -> Vec<String> {
        lock(&self.kvm).misuse.clone()
    }

    /// What is allocated and registered now.
    pub fn state(&self) -> KvmState {
        let k = lock(&self.kvm);
        KvmState {
            gsis: k.gsis.iter().copied().collect(),
            routes: k.routes.keys().copied().collect(),
            irqfds: k.irqfds.iter().map(|(_, g)| *g).collect(),
            slots: k.slots.iter().copied().collect(),
        }
    }
}

impl IrqRouting for FakeKvm {
    fn allocate_gsi(&self) -> Result<u32, HookError> {
        let mut k = lock(&self.kvm);
        let g = k.next_gsi;
        k.next_gsi += 1;
        k.gsis.insert(g);
        Ok(g)
    }

    fn release_gsi(&self, gsi: u32) {
        let mut k = lock(&self.kvm);
        if !k.gsis.remove(&gsi) {
            k.misuse
                .push(format!("GSI {gsi} released but not allocated"));
        }
    }

    fn update_msi_routes(
        &self,
        set: &[(u32, MsiMessage)],
        remove: &[u32],
    ) -> Result<(), HookError> {
        let mut k = lock(&self.kvm);
        for (gsi, m) in set {
            if !k.gsis.contains(gsi) {
                k.misuse.push(format!("route on GSI {gsi}, not allocated"));
            }
            k.routes.insert(*gsi, *m);
        }
        for gsi in remove {
            k.routes.remove(gsi);
        }
        Ok(())
    }

    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), HookError> {
        let mut k = lock(&self.kvm);
        if !k.irqfds.insert((evt.as_raw_fd(), gsi)) {
            k.misuse
                .push(format!("irqfd on GSI {gsi} registered twice"));
            return Err(HookError(format!("irqfd on GSI {gsi}: busy")));
        }
        Ok(())
    }

    fn register_irqfd_with_resample(
        &self,
        evt: &EventFd,
        _resample: &EventFd,
        gsi: u32,
    ) -> Result<(), HookError> {
        self.register_irqfd(evt, gsi)
    }

    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), HookError> {
        let mut k = lock(&self.kvm);
        if !k.irqfds.remove(&(evt.as_raw_fd(), gsi)) {
            k.misuse
                .push(format!("irqfd on GSI {gsi} removed but not registered"));
        }
        Ok(())
    }
}

impl MemslotMapper for FakeKvm {
    fn map(&self, _gpa: u64, _size: u64, _host_addr: u64) -> Result<u32, HookError> {
        let mut k = lock(&self.kvm);
        let s = k.next_slot;
        k.next_slot += 1;
        k.slots.insert(s);
        Ok(s)
    }

    fn unmap(&self, slot: u32) -> Result<(), HookError> {
        let mut k = lock(&self.kvm);
        if !k.slots.remove(&slot) {
            k.misuse
                .push(format!("memslot {slot} removed but not mapped"));
        }
        Ok(())
    }
}
