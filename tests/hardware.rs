//! The real-hardware layer (README, "Real hardware"): one test per scenario that runs in the
//! rig runner's hardware mode (`HW=yes` in its `meta`). On a VT-d/AMD-Vi host, as root, with
//! `CONDUIT_HW_DEVICES` naming the devices to pass through (`0000:17:00.0,0000:65:00.0`),
//! each runs `tests/rig/run SCENARIO` on the host itself with this build's `conduit` and
//! fails when the run fails. Without the variable each is reported as skipped, with that
//! reason: never as passed.
//!
//! libtest cannot skip at run time, so this file is a `harness = false` test with its own
//! `main`: it prints libtest-like lines (`test gpu ... skipped: ...`), takes name filters,
//! `--exact` and `--list`, and exits 101 when a test failed. One more test needs no hardware
//! and always runs: the list below must be exactly the scenarios marked `HW=yes`.

mod rig_runner;

use std::process::ExitCode;

use rig_runner::{log_tail, repo, rig};

/// The variable that turns the hardware tests on.
const DEVICES_VAR: &str = "CONDUIT_HW_DEVICES";

/// The hardware-capable scenarios, each with what it shows.
const HW_SCENARIOS: &[(&str, &str)] = &[(
    "gpu",
    "every device in CONDUIT_HW_DEVICES passed to a driverless guest: vendor/device id and \
     class as on the host, every BAR assigned at the host's size, MSI-X with the host's table \
     size, BAR0's first register (NVIDIA's PMC_BOOT_0) equal to the host's",
)];

enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
}

/// Runs hardware scenario `scenario`, or says why it is skipped.
fn hardware_scenario(scenario: &str) -> Outcome {
    match std::env::var(DEVICES_VAR) {
        Ok(v) if !v.trim().is_empty() => {}
        _ => {
            return Outcome::Skipped(format!(
                "{DEVICES_VAR} is not set (see README, Real hardware)"
            ))
        }
    }
    let run = rig(&[scenario], &[]);
    let verdict = run.verdict();
    println!("{verdict}");
    if run.passed {
        Outcome::Passed
    } else {
        Outcome::Failed(format!(
            "hardware scenario {scenario} failed:\n{}\n\n--- log {}",
            run.output,
            log_tail(&run.output, 60)
        ))
    }
}

/// The scenarios whose `meta` says `HW=yes` must be exactly [`HW_SCENARIOS`].
fn hardware_scenarios_are_listed() -> Outcome {
    let dir = repo().join("tests/rig/scenarios");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => return Outcome::Failed(format!("cannot read {}: {e}", dir.display())),
    };
    let mut marked: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("meta"))
                .is_ok_and(|m| m.lines().any(|l| l.trim() == "HW=yes"))
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    marked.sort();
    let mut listed: Vec<String> = HW_SCENARIOS.iter().map(|(s, _)| s.to_string()).collect();
    listed.sort();
    if marked == listed {
        Outcome::Passed
    } else {
        Outcome::Failed(format!(
            "scenarios with HW=yes in their meta: {marked:?}; tests/hardware.rs lists {listed:?}"
        ))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let list = args.iter().any(|a| a == "--list");
    // Options that take a value (libtest's): skip the value too.
    let mut filters = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--test-threads" | "--format" | "--color" | "--logfile" | "--skip" | "-Z" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    let wanted = |name: &str| {
        filters.is_empty()
            || filters.iter().any(|f| {
                if exact {
                    name == f
                } else {
                    name.contains(f.as_str())
                }
            })
    };

    let mut tests: Vec<(String, Box<dyn Fn() -> Outcome>)> = vec![(
        "hardware_scenarios_are_listed".to_string(),
        Box::new(hardware_scenarios_are_listed),
    )];
    for (scenario, _what) in HW_SCENARIOS {
        tests.push((
            scenario.to_string(),
            Box::new(move || hardware_scenario(scenario)),
        ));
    }
    tests.retain(|(name, _)| wanted(name));

    if list {
        for (name, _) in &tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", tests.len());
    let (mut passed, mut failed, mut skipped) = (0, Vec::new(), 0);
    for (name, test) in &tests {
        match test() {
            Outcome::Passed => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Outcome::Skipped(why) => {
                println!("test {name} ... skipped: {why}");
                skipped += 1;
            }
            Outcome::Failed(why) => {
                println!("test {name} ... FAILED");
                failed.push((name.clone(), why));
            }
        }
    }
    for (name, why) in &failed {
        println!("\n---- {name} ----\n{why}");
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; {skipped} skipped\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
