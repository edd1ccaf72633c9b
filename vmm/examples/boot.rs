//! Boots a VM from Rust with the `vmm` library: describe it with a `VmConfig`, create it,
//! boot it, look at it, then wait for the guest to power off (or press the power button
//! after a while).
//!
//! ```sh
//! cargo run --release -p vmm --example boot -- /boot/vmlinuz-$(uname -r) \
//!     [--initramfs /boot/initrd.img-$(uname -r)] [--memory 1G] [--cpus 2] \
//!     [--device 0000:17:00.0[,p2p=on][,rom=PATH|off]] [--shutdown-after 60]
//! ```
//!
//! The same VM as JSON (what `conduit run --config` and `PUT /api/v1/vm.create` take) is
//! printed first.

use std::time::Duration;

use vmm::config::{parse_device_spec, parse_size, VmConfig};
use vmm::vm::Vm;

fn usage() -> ! {
    eprintln!(
        "usage: boot KERNEL [--initramfs PATH] [--cmdline STR] [--memory SIZE] [--cpus N] \
         [--device ADDRESS[,p2p=on][,rom=PATH|off]]... [--shutdown-after SECONDS]"
    );
    std::process::exit(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(kernel) = args.next() else { usage() };
    let mut config = VmConfig::linux(kernel);
    let mut shutdown_after = None;
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else { usage() };
        match flag.as_str() {
            "--initramfs" => {
                if let Some(k) = config.kernel.as_mut() {
                    k.initramfs = Some(value.into());
                }
            }
            "--cmdline" => {
                if let Some(k) = config.kernel.as_mut() {
                    k.cmdline = value;
                }
            }
            "--memory" => config.memory_bytes = parse_size(&value)?,
            "--cpus" => config.cpus = value.parse()?,
            "--device" => config.devices.push(parse_device_spec(&value)?),
            "--shutdown-after" => shutdown_after = Some(Duration::from_secs(value.parse()?)),
            _ => usage(),
        }
    }
    println!("{}", config.to_json());

    // Checks the values and the files; nothing is taken on the host yet.
    let vm = Vm::create(config)?;
    // Builds the VM (memory, KVM VM, devices, kernel, vCPUs) and starts the vCPUs.
    vm.boot()?;
    let info = vm.info();
    eprintln!(
        "booted: {} vCPU(s), {} MiB, {} device(s), built in {} ms",
        info.vcpus.count,
        info.memory.bytes >> 20,
        info.devices.len(),
        info.boot.as_ref().map_or(0, |b| b.build_ms)
    );
    for d in &info.devices {
        eprintln!(
            "  {} -> guest {} (IOMMU group {:?}), {} BAR(s)",
            d.host_address,
            d.guest_address,
            d.iommu_group,
            d.bars.len()
        );
    }
    let outcome = match shutdown_after {
        Some(after) => {
            std::thread::sleep(after);
            // ACPI power button; forced off if the guest has not powered off in 30 s.
            vm.shutdown(Duration::from_secs(30))?
        }
        None => vm.wait()?,
    };
    eprintln!("stopped: {outcome:?}");
    Ok(())
}
