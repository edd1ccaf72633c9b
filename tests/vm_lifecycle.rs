//! The VM lifecycle as a library (`vmm::vm::Vm`) on this machine's /dev/kvm, with real-mode
//! payloads: create, boot, info, graceful shutdown through the ACPI power button, forced
//! shutdown after the timeout, host reboot, the restart policy, kill, drop, and the state
//! errors.

mod common;

use std::time::{Duration, Instant};

use common::{read, wait_until, Asm, TempDir};
use vmm::config::{DeviceConfig, OnReboot, SerialMode, VmConfig};
use vmm::event_loop::Outcome;
use vmm::vm::{StopInfo, Vm, VmError, VmState};

const LIMIT: Duration = Duration::from_secs(20);

fn config(dir: &TempDir, name: &str, code: &Asm) -> (VmConfig, std::path::PathBuf) {
    let log = dir.path().join(format!("{name}.log"));
    let mut c = VmConfig::payload(dir.payload(name, code));
    c.memory_bytes = 64 << 20;
    c.serial = SerialMode::File(log.clone());
    (c, log)
}

fn is_state_error(r: Result<impl std::fmt::Debug, VmError>, want: VmState) {
    match r {
        Err(VmError::State { state, .. }) => assert_eq!(state, want),
        other => panic!("expected a state error ({want}), got {other:?}"),
    }
}

#[test]
fn graceful_shutdown_through_the_power_button_then_boot_again() {
    let dir = TempDir::new("lifecycle");
    let code = Asm::default()
        .print("up\n")
        .wait_power_button()
        .print("bye\n")
        .acpi_poweroff();
    let (mut c, log) = config(&dir, "button", &code);
    c.cpus = 2;
    let vm = Vm::create(c).unwrap();
    assert_eq!(vm.state(), VmState::Created);
    let info = vm.info();
    assert_eq!(info.state, VmState::Created);
    assert!(info.boot.is_none() && info.stopped.is_none());
    is_state_error(vm.wait(), VmState::Created);
    is_state_error(vm.shutdown(Duration::ZERO), VmState::Created);
    is_state_error(vm.reboot(), VmState::Created);

    vm.boot().unwrap();
    is_state_error(vm.boot(), VmState::Running);
    let info = vm.info();
    assert_eq!(info.state, VmState::Running);
    assert_eq!((info.vcpus.count, info.vcpus.running), (2, 2));
    assert_eq!(info.memory.bytes, 64 << 20);
    assert_eq!(
        info.memory.regions.iter().map(|r| r.size).sum::<u64>(),
        64 << 20
    );
    let boot = info.boot.expect("boot times");
    assert_eq!(boot.boots, 1);
    assert!(boot.started_at_unix_ms > 1_600_000_000_000);
    assert!(info.devices.is_empty());
    wait_until("the payload to start", LIMIT, || read(&log) == "up\n");

    let t = Instant::now();
    let outcome = vm.shutdown(Duration::from_secs(15)).unwrap();
    assert_eq!(
        outcome,
        Outcome::PowerOff,
        "the guest saw the button and powered off"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(read(&log), "up\nbye\n");
    let info = vm.info();
    assert_eq!(info.state, VmState::Shutdown);
    assert_eq!(info.stopped, Some(StopInfo::Outcome(Outcome::PowerOff)));
    assert_eq!(info.vcpus.running, 0);
    assert!(info.memory.regions.is_empty());
    assert_eq!(vm.wait().unwrap(), Outcome::PowerOff);
    is_state_error(vm.shutdown(Duration::ZERO), VmState::Shutdown);

    // A shut-down VM boots again from its configuration.
    vm.boot().unwrap();
    assert_eq!(vm.state(), VmState::Running);
    assert_eq!(vm.info().boot.unwrap().boots, 2);
    wait_until("the second run to start", LIMIT, || {
        read(&log) == "up\nbye\nup\n"
    });
    assert_eq!(vm.kill().unwrap(), Outcome::ForcedOff);
    assert_eq!(vm.state(), VmState::Shutdown);
}

#[test]
fn shutdown_forces_a_guest_that_ignores_the_button() {
    let dir = TempDir::new("lifecycle");
    let (c, log) = config(&dir, "deaf", &Asm::default().print("up\n").hlt_loop());
    let vm = Vm::create(c).unwrap();
    vm.boot().unwrap();
    wait_until("the payload to start", LIMIT, || read(&log) == "up\n");
    let t = Instant::now();
    let outcome = vm.shutdown(Duration::from_millis(300)).unwrap();
    let took = t.elapsed();
    assert_eq!(outcome, Outcome::ForcedOff);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        vm.info().stopped,
        Some(StopInfo::Outcome(Outcome::ForcedOff))
    );
}

#[test]
fn host_reboot_rebuilds_the_vm() {
    let dir = TempDir::new("lifecycle");
    let (c, log) = config(&dir, "reboot", &Asm::default().print("b\n").hlt_loop());
    assert_eq!(
        c.on_reboot,
        OnReboot::Exit,
        "a host reboot ignores the policy"
    );
    let vm = Vm::create(c).unwrap();
    vm.boot().unwrap();
    wait_until("the first run", LIMIT, || read(&log) == "b\n");
    vm.reboot().unwrap();
    assert_eq!(vm.state(), VmState::Running);
    assert_eq!(vm.info().boot.unwrap().boots, 2);
    wait_until("the second run", LIMIT, || read(&log) == "b\nb\n");
    assert_eq!(vm.kill().unwrap(), Outcome::ForcedOff);
}

#[test]
fn guest_reset_follows_on_reboot() {
    let dir = TempDir::new("lifecycle");
    let code = Asm::default().print("r").i8042_reset();
    // exit: the VM stops with Reset.
    let (c, _) = config(&dir, "reset-exit", &code);
    let vm = Vm::create(c).unwrap();
    vm.boot().unwrap();
    assert_eq!(vm.wait().unwrap(), Outcome::Reset);
    assert_eq!(vm.info().boot.unwrap().boots, 1);
    // restart: rebuilt on every reset until killed.
    let (mut c, log) = config(&dir, "reset-restart", &code);
    c.on_reboot = OnReboot::Restart;
    let vm = Vm::create(c).unwrap();
    vm.boot().unwrap();
    // A boot is counted when the VM is rebuilt, before its guest prints: wait for both.
    wait_until("three boots that printed", LIMIT, || {
        vm.info().boot.is_some_and(|b| b.boots >= 3) && read(&log).starts_with("rrr")
    });
    assert_eq!(vm.kill().unwrap(), Outcome::ForcedOff);
    assert!(read(&log).chars().all(|c| c == 'r'), "{}", read(&log));
}

/// A kill that lands while the guest resets must stop the VM, not be lost in the rebuild
/// (seen under load: `kill` waited forever while the VM restarted thousands of times).
#[test]
fn a_kill_racing_a_guest_reset_stops_a_restarting_vm() {
    let dir = TempDir::new("lifecycle");
    let code = Asm::default().print("r").i8042_reset();
    for round in 0..30u64 {
        let (mut c, log) = config(&dir, &format!("kill-race-{round}"), &code);
        c.on_reboot = OnReboot::Restart;
        let vm = std::sync::Arc::new(Vm::create(c).unwrap());
        vm.boot().unwrap();
        wait_until("a first reset", LIMIT, || !read(&log).is_empty());
        // Kill at varying moments of the reset/rebuild cycle.
        std::thread::sleep(Duration::from_micros(round * 300));
        let (tx, rx) = std::sync::mpsc::channel();
        let killer = vm.clone();
        std::thread::spawn(move || tx.send(killer.kill()).unwrap());
        let outcome = rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("round {round}: kill did not return within {LIMIT:?}"));
        assert_eq!(outcome.unwrap(), Outcome::ForcedOff, "round {round}");
        assert_eq!(vm.state(), VmState::Shutdown);
    }
}

#[test]
fn create_checks_config_and_files_and_a_failed_boot_leaves_the_vm_created() {
    let dir = TempDir::new("lifecycle");
    let mut c = VmConfig::payload(dir.path().join("missing.bin"));
    c.serial = SerialMode::Off;
    match Vm::create(c) {
        Err(VmError::InvalidConfig(e)) => assert_eq!(e.field(), "payload.path", "{e}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let (mut c, _) = config(&dir, "zero", &Asm::default().hlt_loop());
    c.cpus = 0;
    match Vm::create(c) {
        Err(VmError::InvalidConfig(e)) => assert_eq!(e.field(), "cpus"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A device that is not on this host: the boot fails, naming it; nothing is left
    // running and the VM can be inspected (and dropped).
    let (mut c, _) = config(&dir, "nodev", &Asm::default().hlt_loop());
    c.devices = vec![DeviceConfig::new("0000:ff:1f.7")];
    let vm = Vm::create(c).unwrap();
    let e = vm.boot().unwrap_err();
    assert!(e.to_string().contains("0000:ff:1f.7"), "{e}");
    assert_eq!(vm.state(), VmState::Created);
    assert_eq!(vm.info().state, VmState::Created);
}

#[test]
fn dropping_a_running_vm_stops_it() {
    let dir = TempDir::new("lifecycle");
    let (c, log) = config(&dir, "drop", &Asm::default().print("up\n").hlt_loop());
    let vm = Vm::create(c).unwrap();
    vm.boot().unwrap();
    wait_until("the payload to start", LIMIT, || read(&log) == "up\n");
    let t = Instant::now();
    drop(vm);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn run_is_create_boot_wait() {
    let dir = TempDir::new("lifecycle");
    let (c, log) = config(
        &dir,
        "run",
        &Asm::default().print("hello\n").acpi_poweroff(),
    );
    assert_eq!(vmm::vm::run(&c).unwrap(), Outcome::PowerOff);
    assert_eq!(read(&log), "hello\n");
}
