//! The lists parse, compile in every mode and agree with the code; bad files are refused
//! with the file and the filter named. (That a trapped call ends the process with SIGSYS,
//! and that `log` lets it through, is tests/seccomp.rs: it needs a process of its own.)

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

fn lists() -> Value {
    serde_json::from_str(BUILTIN_JSON).unwrap()
}

fn rules(kind: ThreadKind) -> Vec<Value> {
    lists()[kind.name()]["filter"].as_array().unwrap().clone()
}

fn names(kind: ThreadKind) -> BTreeSet<String> {
    rules(kind)
        .iter()
        .map(|r| r["syscall"].as_str().unwrap().to_string())
        .collect()
}

/// Whether condition `c` holds for argument value `v`.
fn holds(c: &Value, v: u64) -> bool {
    let want = c["val"].as_u64().unwrap();
    let v = if c["type"] == "dword" {
        v & 0xffff_ffff
    } else {
        v
    };
    match &c["op"] {
        Value::String(op) if op == "eq" => v == want,
        Value::String(op) if op == "ne" => v != want,
        Value::Object(m) => {
            let mask = m["masked_eq"].as_u64().unwrap();
            v & mask == want & mask
        }
        other => panic!("operator {other} not handled by this test"),
    }
}

fn args(rule: &Value) -> Vec<Value> {
    rule.get("args")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether some `vmm` rule lets through every call that `rule` lets through: each of its
/// conditions either appears in `rule` or holds for the value `rule` pins that argument to.
fn vmm_covers(rule: &Value) -> bool {
    let want = args(rule);
    rules(ThreadKind::Vmm)
        .iter()
        .filter(|r| r["syscall"] == rule["syscall"])
        .any(|r| {
            args(r).iter().all(|c| {
                want.iter().any(|w| {
                    let same_arg = w["index"] == c["index"];
                    let strip = |x: &Value| {
                        let mut x = x.clone();
                        x.as_object_mut().unwrap().remove("comment");
                        x
                    };
                    (same_arg && strip(w) == strip(c))
                        || (same_arg && w["op"] == "eq" && holds(c, w["val"].as_u64().unwrap()))
                })
            })
        })
}

#[test]
fn every_kind_compiles_in_on_and_log_and_off_installs_nothing() {
    for mode in [SeccompMode::On, SeccompMode::Log] {
        let f = SeccompFilters::builtin(mode).unwrap();
        assert_eq!(f.mode(), mode);
        for kind in ThreadKind::ALL {
            let p = f.programs.get(&kind).expect("compiled");
            // Linux refuses programs over BPF_MAXINSNS (4096) instructions.
            assert!(!p.is_empty() && p.len() < 4096, "{kind}: {}", p.len());
        }
    }
    let off = SeccompFilters::builtin(SeccompMode::Off).unwrap();
    assert!(off.programs.is_empty());
    off.apply(ThreadKind::Vcpu).unwrap();
    // Compiled once per process and mode.
    assert!(Arc::ptr_eq(
        &SeccompFilters::builtin(SeccompMode::On).unwrap(),
        &SeccompFilters::builtin(SeccompMode::On).unwrap()
    ));
}

#[test]
fn lists_name_real_calls_each_either_unconditional_or_conditional() {
    let doc = lists();
    assert_eq!(
        doc.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["api", "vcpu", "vmm"]
    );
    for kind in ThreadKind::ALL {
        let mut unconditional = BTreeSet::new();
        let mut conditional = BTreeSet::new();
        for r in rules(kind) {
            let name = r["syscall"].as_str().unwrap().to_string();
            assert!(
                syscall_names::X86_64.contains(&name.as_str()),
                "{kind}: {name} is not an x86_64 call"
            );
            assert!(
                r.get("comment").is_some(),
                "{kind}: {name} says not why it is allowed"
            );
            if args(&r).is_empty() {
                assert!(unconditional.insert(name.clone()), "{kind}: {name} twice");
            } else {
                conditional.insert(name);
            }
        }
        // seccompiler drops an unconditional entry when the call also has conditional ones.
        let both: Vec<_> = unconditional.intersection(&conditional).collect();
        assert!(
            both.is_empty(),
            "{kind}: {both:?} both with and without args"
        );
        for banned in [
            "execve", "execveat", "ptrace", "socket", "connect", "fork", "vfork",
        ] {
            let banned = banned.to_string();
            assert!(!unconditional.contains(&banned) && !conditional.contains(&banned));
        }
    }
    assert!(sigsys::NOT_A_SYSCALL as usize >= syscall_names::X86_64.len());
}

#[test]
fn vcpu_threads_are_allowed_their_calls_by_the_inherited_vmm_filter_too() {
    for r in rules(ThreadKind::Vcpu) {
        assert!(vmm_covers(&r), "vmm does not allow vcpu's {r}");
    }
    let vcpu = names(ThreadKind::Vcpu);
    assert!(vcpu.is_subset(&names(ThreadKind::Vmm)));
}

#[test]
fn vcpu_ioctls_are_the_five_a_running_guest_causes() {
    use kvm_bindings::{kvm_irq_routing, kvm_irqfd, kvm_userspace_memory_region};
    const KVMIO: u32 = 0xAE;
    const VFIO_TYPE: u32 = b';' as u32;
    vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    vmm_sys_util::ioctl_iow_nr!(KVM_IRQFD, KVMIO, 0x76, kvm_irqfd);
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
    vmm_sys_util::ioctl_iow_nr!(
        KVM_SET_USER_MEMORY_REGION,
        KVMIO,
        0x46,
        kvm_userspace_memory_region
    );
    vmm_sys_util::ioctl_io_nr!(VFIO_DEVICE_SET_IRQS, VFIO_TYPE, 100 + 10);
    let want: BTreeSet<u64> = [
        KVM_RUN(),
        KVM_IRQFD(),
        KVM_SET_GSI_ROUTING(),
        KVM_SET_USER_MEMORY_REGION(),
        VFIO_DEVICE_SET_IRQS(),
    ]
    .into_iter()
    .collect();
    let got: BTreeSet<u64> = rules(ThreadKind::Vcpu)
        .iter()
        .filter(|r| r["syscall"] == "ioctl")
        .map(|r| {
            let a = args(r);
            assert_eq!(
                (a.len(), &a[0]["index"], &a[0]["op"]),
                (1, &Value::from(1), &Value::from("eq"))
            );
            a[0]["val"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(got, want);
    // The vmm list takes KVM and VFIO ioctls by type: the kick signal and these pass.
    let kick = u64::try_from(crate::vcpu::kick_signal()).unwrap();
    assert!(rules(ThreadKind::Vmm)
        .iter()
        .any(|r| r["syscall"] == "tgkill"
            && args(r).iter().all(|c| c["index"] == 2 && holds(c, kick))));
}

#[test]
fn api_threads_open_files_read_only() {
    let openat: Vec<Value> = rules(ThreadKind::Api)
        .into_iter()
        .filter(|r| r["syscall"] == "openat")
        .collect();
    assert_eq!(openat.len(), 1);
    let cond = &args(&openat[0])[0];
    assert_eq!(cond["index"], 2);
    for ok in [
        libc::O_RDONLY | libc::O_CLOEXEC,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    ] {
        assert!(holds(cond, ok as u64), "{ok:#x}");
    }
    for bad in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_CREAT,
        libc::O_TRUNC,
        libc::O_APPEND,
        libc::O_TMPFILE,
    ] {
        assert!(!holds(cond, bad as u64), "{bad:#x}");
    }
}

fn with(edit: impl FnOnce(&mut Value)) -> String {
    let mut doc = lists();
    edit(&mut doc);
    doc.to_string()
}

fn refused(json: &str) -> String {
    SeccompFilters::from_json(json, "bad.json", SeccompMode::On)
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_filter_files_are_refused_naming_file_and_filter() {
    let e = refused("{ not json");
    assert!(e.starts_with("seccomp filter file bad.json: "), "{e}");
    let e = refused("[]");
    assert!(e.contains("not a JSON object"), "{e}");
    let e = refused(&with(|d| {
        d.as_object_mut().unwrap().remove("api");
    }));
    assert!(e.contains("bad.json: no filter \"api\""), "{e}");
    let e = refused(&with(|d| d["gpu"] = d["api"].clone()));
    assert!(e.contains("unknown filter \"gpu\""), "{e}");
    let e = refused(&with(|d| {
        d["vcpu"]["filter"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"syscall": "no_such_call"}))
    }));
    assert!(e.contains("bad.json: filter \"vcpu\""), "{e}");
    assert!(e.contains("no_such_call"), "{e}");
    let e = refused(&with(|d| d["vmm"]["mismatch_action"] = "allow".into()));
    assert!(
        e.contains("filter \"vmm\": \"mismatch_action\" must be \"trap\""),
        "{e}"
    );
    let e = refused(&with(
        |d| {
            d["api"]["filter"][0]["args"] =
                serde_json::json!([{"index": 9, "type": "dword", "op": "eq", "val": 0}])
        },
    ));
    assert!(e.contains("filter \"api\""), "{e}");
}
