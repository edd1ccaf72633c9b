//! What the fuzz targets share: the H200 passthrough device over the in-memory VFIO device,
//! guest access sizes, and the checks every device target makes after each step.

use std::sync::{Arc, OnceLock};

use devices::vfio::fake::{bar_placer, h200_fixture, FakeKvm, FakeVfioDevice, KvmState};
use devices::vfio::{DeviceOptions, VfioPciDevice};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use pci::PciDevice;

/// The H200 fixture (config space, BAR sizes), read once.
pub fn h200() -> &'static (Vec<u8>, [u64; 6]) {
    static FIXTURE: OnceLock<(Vec<u8>, [u64; 6])> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        h200_fixture().unwrap_or_else(|e| {
            panic!(
                "the H200 fixture ({}) is needed: {e}",
                devices::vfio::fake::h200_fixture_dir().display()
            )
        })
    })
}

/// A passthrough device over an in-memory VFIO device with `config`, and what it talks to.
pub struct Rig {
    /// The device under test.
    pub dev: VfioPciDevice,
    /// Its VFIO device.
    pub vfio: FakeVfioDevice,
    /// Its KVM.
    pub kvm: Arc<FakeKvm>,
}

impl Rig {
    /// The device over `config` with the H200's BAR sizes; `None` when the device refuses
    /// the config space (a clean error, which is fine).
    pub fn new(config: Vec<u8>) -> Option<Self> {
        let vfio = FakeVfioDevice::from_config(config, h200().1);
        let kvm = Arc::new(FakeKvm::new());
        let mut place = bar_placer();
        match VfioPciDevice::with_io(
            "0000:41:00.0".into(),
            Box::new(vfio.clone()),
            kvm.clone(),
            kvm.clone(),
            &mut place,
            DeviceOptions::default(),
        ) {
            Ok(dev) => Some(Self { dev, vfio, kvm }),
            Err(e) => {
                assert!(e.to_string().contains("0000:41:00.0"), "{e}");
                None
            }
        }
    }

    /// Reads `len` bytes of config space at `offset`.
    pub fn read(&mut self, offset: u16, len: usize) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read_config(offset, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    /// Whether the guest has MSI and MSI-X enabled at once (vfio-pci then refuses the
    /// second; a guest error, not ours).
    pub fn both_msi_kinds_enabled(&mut self) -> bool {
        let (msi, msix) = (self.cap(0x05), self.cap(0x11));
        let msi_on = msi.is_some_and(|o| self.read(o + 2, 2) & 1 != 0);
        let msix_on = msix.is_some_and(|o| self.read(o + 2, 2) & 0x8000 != 0);
        msi_on && msix_on
    }

    fn cap(&self, id: u8) -> Option<u16> {
        pci::find_capability(&self.vfio.config(), id).map(u16::from)
    }

    /// Checks made after every step: KVM used correctly, every BAR where the VMM has it
    /// naturally aligned, and VFIO refusing nothing unless the guest enabled MSI and MSI-X
    /// together at some point (`both_seen`).
    pub fn check(&mut self, both_seen: bool) {
        let misuse = self.kvm.misuse();
        assert!(misuse.is_empty(), "KVM misuse: {misuse:?}");
        for b in self.dev.bars() {
            assert!(b.size.is_power_of_two(), "{b:?}");
            assert_eq!(b.addr % b.size, 0, "BAR not aligned to its size: {b:?}");
        }
        let refused = self.vfio.refused_irq_calls();
        assert!(
            refused.is_empty() || both_seen,
            "VFIO refused SET_IRQS: {refused:?}"
        );
    }

    /// Tears the device down and checks that nothing is left on the host: no interrupt
    /// mode in VFIO, no GSI, route, irqfd or memslot in KVM.
    pub fn teardown(mut self) {
        self.dev.shutdown();
        assert_eq!(self.vfio.irq_mode(), (None, 0), "VFIO interrupts left on");
        assert_eq!(self.kvm.state(), KvmState::default(), "KVM state left");
        let misuse = self.kvm.misuse();
        assert!(misuse.is_empty(), "KVM misuse: {misuse:?}");
    }
}

/// A guest access size.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Size {
    /// Byte.
    B1,
    /// Word.
    B2,
    /// Dword.
    B4,
    /// Qword (MMIO only).
    B8,
}

impl Size {
    /// The size in bytes, at most `max`.
    pub fn bytes(self, max: usize) -> usize {
        let n = match self {
            Size::B1 => 1,
            Size::B2 => 2,
            Size::B4 => 4,
            Size::B8 => 8,
        };
        n.min(max)
    }
}
