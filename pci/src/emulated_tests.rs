//! End to end: an emulated device with a BAR and MSI-X, wired the way the devices crate is
//! meant to wire one, driven through ECAM and its BAR like a guest driver would.

use std::sync::{Arc, Mutex};

use crate::capabilities::{find_capability, CAP_ID_MSIX};
use crate::config_space::{BarSpec, ConfigSpace, PciHeader, BAR0, COMMAND, COMMAND_MEMORY};
use crate::device::{BarKind, BarRegion, ConfigWriteOutcome, PciDevice};
use crate::interrupt::testing::{RecordingRoutes, RouteCall};
use crate::msix::{MsixConfig, MsixLayout, MSIX_CONTROL_ENABLE};
use crate::{PciBus, PciConfigMmio};

struct Emulated {
    config: ConfigSpace,
    msix: MsixConfig,
    routes: RecordingRoutes,
}

impl Emulated {
    fn new() -> Self {
        let mut config = ConfigSpace::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1110,
            class_code: 0x05_00_00,
            ..Default::default()
        });
        config
            .add_bar(
                0,
                BarSpec {
                    kind: BarKind::Mem64,
                    prefetchable: false,
                    size: 0x4000,
                    addr: 0x1_0000_0000,
                },
            )
            .unwrap();
        let msix = MsixConfig::add_to(
            &mut config,
            MsixLayout {
                table_size: 4,
                table_bir: 0,
                table_offset: 0x2000,
                pba_bir: 0,
                pba_offset: 0x3000,
            },
        )
        .unwrap();
        Emulated {
            config,
            msix,
            routes: RecordingRoutes::default(),
        }
    }
}

impl PciDevice for Emulated {
    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
        self.msix.read_config(offset, data);
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> ConfigWriteOutcome {
        if let Err(e) = self.msix.write_config(offset, data, &mut self.routes) {
            log::error!("MSI-X update failed: {e}");
        }
        self.config.write(offset, data)
    }

    fn bars(&self) -> Vec<BarRegion> {
        self.config.bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        let layout = *self.msix.layout();
        if bar == layout.table_bir && layout.table_range().contains(&offset) {
            self.msix
                .read_table(offset - layout.table_range().start, data);
        } else if bar == layout.pba_bir && layout.pba_range().contains(&offset) {
            self.msix.read_pba(offset - layout.pba_range().start, data);
        } else {
            data.fill(0);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        let layout = *self.msix.layout();
        if bar == layout.table_bir && layout.table_range().contains(&offset) {
            let start = layout.table_range().start;
            if let Err(e) = self
                .msix
                .write_table(offset - start, data, &mut self.routes)
            {
                log::error!("MSI-X update failed: {e}");
            }
        }
    }
}

#[test]
fn guest_driver_flow() {
    let dev = Arc::new(Mutex::new(Emulated::new()));
    let mut bus = PciBus::new();
    let addr = bus.add_device_at(2, 0, dev.clone()).unwrap();
    let mut ecam = PciConfigMmio::new(Arc::new(Mutex::new(bus)));
    let base = u64::from(addr.device) << 15;
    let rd = |ecam: &mut PciConfigMmio, reg: u16| {
        let mut b = [0u8; 4];
        ecam.read(base + u64::from(reg), &mut b);
        u32::from_le_bytes(b)
    };

    // Enumeration: ids, the capability list, the BAR size.
    assert_eq!(rd(&mut ecam, 0), 0x1110_1af4);
    let mut cfg = vec![0u8; 256];
    for reg in (0..256).step_by(4) {
        let v = rd(&mut ecam, reg as u16);
        cfg[reg..reg + 4].copy_from_slice(&v.to_le_bytes());
    }
    let cap = find_capability(&cfg, CAP_ID_MSIX).expect("MSI-X is listed");
    ecam.write(base + u64::from(BAR0), &u32::MAX.to_le_bytes());
    assert_eq!(rd(&mut ecam, BAR0), 0xffff_c004);
    ecam.write(base + u64::from(BAR0), &0u32.to_le_bytes());
    // The guest moves BAR0 to 2 GiB above its place and turns memory decode on.
    ecam.write(base + u64::from(BAR0) + 4, &2u32.to_le_bytes());
    let out = ecam.write(base + u64::from(COMMAND), &COMMAND_MEMORY.to_le_bytes());
    assert_eq!(out.bar_moves.len(), 1);
    assert_eq!(out.bar_moves[0].old_addr, 0x1_0000_0000);
    assert_eq!(out.bar_moves[0].new_addr, 0x2_0000_0000);
    assert_eq!(dev.lock().unwrap().bars()[0].addr, 0x2_0000_0000);

    // MSI-X: enable, program vector 1 through the BAR, unmask it.
    let ctrl = base + u64::from(cap) + 2;
    ecam.write(ctrl, &MSIX_CONTROL_ENABLE.to_le_bytes());
    assert_eq!(rd(&mut ecam, cap.into()) >> 31, 1, "enable reads back");
    {
        let mut d = dev.lock().unwrap();
        d.bar_write(0, 0x2010, &0xfee0_0000u32.to_le_bytes());
        d.bar_write(0, 0x2014, &0u32.to_le_bytes());
        d.bar_write(0, 0x2018, &0x41u32.to_le_bytes());
        d.bar_write(0, 0x201c, &0u32.to_le_bytes());
        let mut b = [0u8; 4];
        d.bar_read(0, 0x2018, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x41);
        let calls = d.routes.take();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(matches!(&calls[0], RouteCall::SetRoutes(r) if r.len() == 1 && r[0].vector == 1));
        assert_eq!(calls[1], RouteCall::Enable(vec![1]));
    }
    // Disable MSI-X from config space: the irqfd goes first.
    ecam.write(ctrl, &0u16.to_le_bytes());
    let calls = dev.lock().unwrap().routes.take();
    assert_eq!(
        calls,
        vec![RouteCall::Disable(vec![1]), RouteCall::SetRoutes(vec![])]
    );
}
