//! The nested test rig (`tests/rig/README.md`): one test per scenario, each running
//! `tests/rig/run SCENARIO` with the `conduit` binary of this build. A test passes only
//! when the rig says the scenario passed; on failure it shows the rig's verdict (which
//! names the failed stage) and the tail of the run's log.
//!
//! The rig itself runs one L1 at a time (a lock in `tests/rig/run`), so these tests
//! may be started in parallel: they queue there.

mod rig_runner;

use rig_runner::{log_tail, rig};

/// Runs `scenario` and fails the test unless the rig says it passed.
fn assert_scenario_passes(scenario: &str) {
    // The rig's scenarios, not hardware mode (tests/hardware.rs).
    let run = rig(&[scenario], &[("CONDUIT_HW_DEVICES", None)]);
    println!("{}", run.verdict());
    assert!(
        run.passed,
        "rig scenario {scenario} failed:\n{}\n\n--- log {}",
        run.output,
        log_tail(&run.output, 60)
    );
}

#[test]
fn rig_lists_its_scenarios() {
    let run = rig(&["--list"], &[("CONDUIT_HW_DEVICES", None)]);
    assert!(run.passed, "tests/rig/run --list failed:\n{}", run.output);
    for scenario in [
        "qemu-peer-nvme",
        "boot",
        "boot-smp",
        "vfio-nvme",
        "vfio-bad-group",
        "gpu",
        "hw-mode",
    ] {
        assert!(
            run.output
                .lines()
                .any(|l| l.split_whitespace().next() == Some(scenario)),
            "--list does not name {scenario}:\n{}",
            run.output
        );
    }
    // Hardware-capable scenarios are marked, the others not.
    let marked = |name: &str| {
        run.output
            .lines()
            .any(|l| l.split_whitespace().take(2).eq([name, "[hw]"]))
    };
    assert!(
        marked("gpu"),
        "--list does not mark gpu [hw]:\n{}",
        run.output
    );
    assert!(!marked("boot"), "--list marks boot [hw]:\n{}", run.output);
}

/// Debian's QEMU in L1 runs L2 with the nvme passed through: the peer of every
/// Conduit scenario, and the proof that the rig itself works.
#[test]
fn qemu_peer_nvme() {
    assert_scenario_passes("qemu-peer-nvme");
}

/// Conduit boots the stock kernel with one vCPU.
#[test]
fn boot() {
    assert_scenario_passes("boot");
}

/// Conduit boots the stock kernel with two vCPUs.
#[test]
fn boot_smp() {
    assert_scenario_passes("boot-smp");
}

/// Conduit passes the nvme through with VFIO: L2's nvme driver reads and writes it and its
/// MSI-X vectors fire.
#[test]
fn vfio_nvme() {
    assert_scenario_passes("vfio-nvme");
}

/// As `vfio_nvme`, through iommufd and the VFIO cdev (`--iommu iommufd`) on the rig's
/// self-built 6.12 L1 kernel (built on first use, ~20 min, cached outside the checkout);
/// `p2p=on` is refused through iommufd naming the device and BAR, and put behind type1 in
/// auto mode.
#[test]
fn vfio_iommufd() {
    assert_scenario_passes("vfio-iommufd");
}

/// ivshmem's 64 GiB BAR passed through: assigned at full size, a word written at +60 GiB
/// lands in the backing file.
#[test]
fn vfio_bigbar() {
    assert_scenario_passes("vfio-bigbar");
}

/// Five devices in one guest: nvme and e1000e drivers, bochs and ivshmem registers, edu's DMA
/// through the IOMMU and its INTx.
#[test]
fn vfio_multi() {
    assert_scenario_passes("vfio-multi");
}

/// GPU passthrough as a driverless guest sees it (`gpu`, the scenario that also runs on real
/// hardware, see `tests/hardware.rs`), here with ivshmem, bochs-display and the nvme standing
/// in: ids and class as on the host, every BAR assigned at the host's size and type (64 GiB),
/// MSI-X with the host's table size, BAR0's first word read without a driver and equal to
/// what the host read through VFIO (`conduit host peek`).
#[test]
fn gpu() {
    assert_scenario_passes("gpu");
}

/// The runner's hardware mode (`CONDUIT_HW_DEVICES`, README "Real hardware") with L1 as the
/// host: `tests/rig/run gpu` binds ivshmem, bochs-display and the nvme (from L1's nvme
/// driver), passes them and restores every driver; a rig-only scenario, an unknown device, a
/// group the host uses and a SIGTERM while L2 boots all end with the host as it was.
#[test]
fn hw_mode() {
    assert_scenario_passes("hw-mode");
}

/// The guest reboots with `--on-reboot restart`: the rebuilt VM gets the reset nvme back and
/// it works again.
#[test]
fn vfio_reboot() {
    assert_scenario_passes("vfio-reboot");
}

/// `conduit host`: check finds L1's VT-d and interrupt remapping, list shows the emulated
/// devices in their IOMMU groups, bind refuses the 9p root's group and moves the nvme from
/// L1's nvme driver to vfio-pci, `run --gpus 1b36:0010x1` passes it to L2, and unbind gives
/// it back to the nvme driver with its data (pattern A and L2's pattern B).
#[test]
fn host() {
    assert_scenario_passes("host");
}

/// A device not bound to vfio-pci is refused before the guest starts, by name, with the fix.
#[test]
fn vfio_bad_group() {
    assert_scenario_passes("vfio-bad-group");
}

/// Conduit boots the stock kernel as an ELF vmlinux through its PVH entry, with 2 vCPUs.
#[test]
fn boot_pvh() {
    assert_scenario_passes("boot-pvh");
}

/// Bad input (missing or corrupt kernel, initramfs too big, memory too small or too large,
/// bad --cpus, long command line, unwritable serial file, unknown device) gives exit 1 and an
/// error naming the culprit; SIGTERM stops a running VM with exit 143.
#[test]
fn bad_input() {
    assert_scenario_passes("bad-input");
}

/// The REST API in L1: `conduit serve`, a VM with the nvme created, booted, inspected and
/// shut down through the API (curl), then a second one proving the device was released.
#[test]
fn api() {
    assert_scenario_passes("api");
}

/// `p2p=on`: edu DMAs from guest RAM into ivshmem's 64 GiB BAR (IOVA = the BAR's guest
/// address), the word lands (seen in L2 and in the backing file on L0) and vm.info lists the
/// mapped range; without p2p the same DMA is refused by L1's IOMMU.
#[test]
fn vfio_p2p() {
    assert_scenario_passes("vfio-p2p");
}

/// Expansion ROMs: edu's own ROM (VFIO's ROM region) and a `rom=FILE` on bochs-display read
/// back in L2 through sysfs as made; `rom=off` hides edu's ROM (vm.info); bad `rom=` inputs
/// exit 1 naming the file and the device.
#[test]
fn vfio_rom() {
    assert_scenario_passes("vfio-rom");
}

/// A hostile guest moves the nvme's BAR over RAM, outside the PCI windows and over the
/// e1000e's BAR, writes non-MSI addresses into MSI-X entries, enables MSI and MSI-X
/// together and floods config space: nothing is mapped where it must not be, MSI-X wins
/// over MSI, warnings are rate-limited, both devices work again with sane values, exit 0.
#[test]
fn guest_hostile() {
    assert_scenario_passes("guest-hostile");
}

/// `kill -9` mid-run, then the same nvme works in a new run that replaces the stale API
/// socket; a live or non-socket API path is refused; SIGTERM gives exit 143 with the device
/// reset and the socket removed; a serial log on a read-only filesystem fails at start, and so
/// does a run whose guest RAM RLIMIT_MEMLOCK (without CAP_IPC_LOCK) would not let VFIO pin.
#[test]
fn faults() {
    assert_scenario_passes("faults");
}

/// 20 create/boot/shutdown/delete cycles with the nvme in one `conduit serve`: its open
/// fds and threads are the same after cycle 1 and cycle 20, VmRSS within 2 MiB.
#[test]
fn api_leaks() {
    assert_scenario_passes("api-leaks");
}

/// An L1 without kvm_amd must fail the run, naming the stage, never pass it.
#[test]
fn broken_l1_is_caught() {
    let run = rig(
        &["qemu-peer-nvme"],
        &[
            ("RIG_BREAK", Some("no-kvm-module")),
            ("CONDUIT_HW_DEVICES", None),
        ],
    );
    assert!(
        !run.passed,
        "a run with an L1 missing kvm_amd passed:\n{}",
        run.output
    );
    assert!(
        run.output.contains("at stage 'L1 boot'") && run.output.contains("no /dev/kvm"),
        "the failure does not name the L1 boot stage and the missing /dev/kvm:\n{}\n\n--- log {}",
        run.output,
        log_tail(&run.output, 40)
    );
}
