//! The documents in `resources/` agree with the code: the JSON Schema of VmConfig and the
//! OpenAPI document of the API. Checked with a small validator for the subset of JSON
//! Schema the documents use (type, enum, minimum/maximum, minLength, properties, required,
//! additionalProperties, items, oneOf, $ref), both ways: what the code writes validates
//! against the document, and every property the document lists is written by the code
//! for a fully populated value.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use super::handlers::{self, Backend};
use super::http::Request;
use super::tests::{fake_info, FakeBackend};
use crate::config::{
    DeviceConfig, KernelConfig, OnReboot, PayloadConfig, RomConfig, SerialMode, VmConfig,
};
use crate::event_loop::Outcome;
use crate::vm::{StopInfo, VmState};

fn load(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resources")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Both documents, for resolving `$ref`s across them.
struct Docs {
    openapi: Value,
    vmconfig: Value,
}

#[derive(Clone, Copy)]
enum Doc {
    OpenApi,
    VmConfig,
}

impl Docs {
    fn new() -> Self {
        Self {
            openapi: load("openapi.json"),
            vmconfig: load("vmconfig.schema.json"),
        }
    }

    fn root(&self, doc: Doc) -> &Value {
        match doc {
            Doc::OpenApi => &self.openapi,
            Doc::VmConfig => &self.vmconfig,
        }
    }

    /// Follows `$ref`s; returns the schema and the document it is in.
    fn deref<'a>(&'a self, mut schema: &'a Value, mut doc: Doc) -> (&'a Value, Doc) {
        while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let (file, pointer) = r.split_once('#').unwrap_or((r, ""));
            if file == "vmconfig.schema.json" {
                doc = Doc::VmConfig;
            } else {
                assert!(file.is_empty(), "unknown $ref file {file}");
            }
            schema = self
                .root(doc)
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
        }
        (schema, doc)
    }

    /// Errors of `value` against `schema` (empty when valid).
    fn validate(&self, value: &Value, schema: &Value, doc: Doc, at: &str) -> Vec<String> {
        let (schema, doc) = self.deref(schema, doc);
        let mut errs = Vec::new();
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            let ok = branches
                .iter()
                .filter(|b| self.validate(value, b, doc, at).is_empty())
                .count();
            if ok != 1 {
                errs.push(format!("{at}: {value} matches {ok} of the oneOf branches"));
            }
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            let fits = match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "null" => value.is_null(),
                other => panic!("{at}: type {other} not handled by the test validator"),
            };
            if !fits {
                errs.push(format!("{at}: {value} is not of type {t}"));
                return errs;
            }
        }
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            if !e.contains(value) {
                errs.push(format!("{at}: {value} not in {e:?}"));
            }
        }
        if let (Some(min), Some(v)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) {
            if v < min {
                errs.push(format!("{at}: {v} < minimum {min}"));
            }
        }
        if let (Some(max), Some(v)) = (
            schema.get("maximum").and_then(Value::as_f64),
            value.as_f64(),
        ) {
            if v > max {
                errs.push(format!("{at}: {v} > maximum {max}"));
            }
        }
        if let (Some(min), Some(s)) = (
            schema.get("minLength").and_then(Value::as_u64),
            value.as_str(),
        ) {
            if (s.chars().count() as u64) < min {
                errs.push(format!("{at}: {s:?} shorter than {min}"));
            }
        }
        if let Some(obj) = value.as_object() {
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, v) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => errs.extend(self.validate(v, s, doc, &format!("{at}.{k}"))),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errs.push(format!("{at}: property {k:?} is not in the document"))
                    }
                    None => {}
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap();
                if !obj.contains_key(r) {
                    errs.push(format!("{at}: required property {r:?} missing"));
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
            for (i, v) in arr.iter().enumerate() {
                errs.extend(self.validate(v, items, doc, &format!("{at}[{i}]")));
            }
        }
        errs
    }

    /// Records in `seen` the document properties `value` populates (paths like
    /// `.kernel.path`), and in `all` every property the document lists on the way.
    fn cover(
        &self,
        value: &Value,
        schema: &Value,
        doc: Doc,
        at: &str,
        seen: &mut BTreeSet<String>,
        all: &mut BTreeSet<String>,
    ) {
        let (schema, doc) = self.deref(schema, doc);
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            for b in branches {
                if self.validate(value, b, doc, at).is_empty() {
                    self.cover(value, b, doc, at, seen, all);
                }
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, s) in props {
                let p = format!("{at}.{k}");
                all.insert(p.clone());
                if let Some(v) = value.get(k) {
                    if !v.is_null() {
                        seen.insert(p.clone());
                    }
                    self.cover(v, s, doc, &p, seen, all);
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
            for v in arr {
                self.cover(v, items, doc, &format!("{at}[]"), seen, all);
            }
        }
    }

    fn schema(&self, name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn assert_valid(&self, value: &Value, schema: &Value, doc: Doc) {
        let errs = self.validate(value, schema, doc, "");
        assert!(
            errs.is_empty(),
            "{value:#}\ndoes not fit the document:\n{errs:#?}"
        );
    }

    /// Every property of `schema` is populated by one of `values`.
    fn assert_covers(&self, values: &[Value], schema: &Value, doc: Doc) {
        let (mut seen, mut all) = (BTreeSet::new(), BTreeSet::new());
        for v in values {
            self.assert_valid(v, schema, doc);
            self.cover(v, schema, doc, "", &mut seen, &mut all);
        }
        let missing: Vec<_> = all.difference(&seen).collect();
        assert!(
            missing.is_empty(),
            "the document lists properties the code never writes: {missing:?}"
        );
    }
}

fn full_config() -> VmConfig {
    VmConfig {
        kernel: Some(KernelConfig {
            path: "/boot/vmlinuz".into(),
            initramfs: Some("/boot/initrd.img".into()),
            cmdline: "console=ttyS0".into(),
        }),
        payload: None,
        cpus: 254,
        memory_bytes: 1 << 30,
        hugepages: true,
        serial: SerialMode::File("/tmp/console.log".into()),
        on_reboot: OnReboot::Restart,
        iommu: crate::config::IommuMode::Type1,
        devices: vec![
            DeviceConfig {
                address: "0000:17:00.0".into(),
                p2p: true,
                rom: RomConfig::File("/var/lib/conduit/h200.rom".into()),
            },
            DeviceConfig {
                address: "0000:18:00.0".into(),
                p2p: false,
                rom: RomConfig::Off,
            },
            DeviceConfig::new("0000:19:00.0"),
        ],
    }
}

#[test]
fn vmconfig_schema_and_code_agree() {
    let d = Docs::new();
    let root = json!({"$ref": "vmconfig.schema.json"});
    let payload = VmConfig {
        payload: Some(PayloadConfig {
            path: "/tmp/p.bin".into(),
        }),
        kernel: None,
        serial: SerialMode::Off,
        ..full_config()
    };
    let values = [full_config(), payload, VmConfig::linux("/k")].map(|c| {
        c.validate().unwrap();
        serde_json::to_value(&c).unwrap()
    });
    d.assert_covers(&values, &root, Doc::OpenApi);

    // Every example in the schema is accepted by the code, and written back in a form the
    // schema accepts.
    for ex in d.vmconfig["examples"].as_array().unwrap() {
        let c = VmConfig::from_json(&ex.to_string()).unwrap_or_else(|e| panic!("{ex}: {e}"));
        d.assert_valid(&serde_json::to_value(&c).unwrap(), &root, Doc::OpenApi);
    }

    // The defaults the schema states are the code's.
    let defaults =
        serde_json::to_value(VmConfig::from_json(r#"{"kernel": {"path": "/k"}}"#).unwrap())
            .unwrap();
    let props = &d.vmconfig["properties"];
    for k in [
        "cpus",
        "hugepages",
        "serial",
        "on_reboot",
        "iommu",
        "devices",
    ] {
        assert_eq!(props[k]["default"], defaults[k], "default of {k}");
    }
    assert_eq!(
        crate::config::parse_size(props["memory"]["default"].as_str().unwrap()).unwrap(),
        defaults["memory"].as_u64().unwrap()
    );
    assert_eq!(
        d.vmconfig["$defs"]["Kernel"]["properties"]["cmdline"]["default"],
        defaults["kernel"]["cmdline"]
    );

    // The bounds and enums the schema states are the code's.
    let with = |k: &str, v: Value| {
        let mut j = json!({"kernel": {"path": "/k"}});
        j[k] = v;
        VmConfig::from_json(&j.to_string())
    };
    let min = props["cpus"]["minimum"].as_i64().unwrap();
    let max = props["cpus"]["maximum"].as_i64().unwrap();
    assert!(with("cpus", json!(min)).is_ok() && with("cpus", json!(max)).is_ok());
    assert!(with("cpus", json!(min - 1)).is_err() && with("cpus", json!(max + 1)).is_err());
    let mem_min = props["memory"]["oneOf"][0]["minimum"].as_u64().unwrap();
    assert!(with("memory", json!(mem_min)).is_ok());
    assert!(with("memory", json!(mem_min - 4096)).is_err());
    for v in props["on_reboot"]["enum"].as_array().unwrap() {
        assert!(with("on_reboot", v.clone()).is_ok(), "{v}");
    }
    for v in props["serial"]["oneOf"][0]["enum"].as_array().unwrap() {
        assert!(with("serial", v.clone()).is_ok(), "{v}");
    }
    for v in props["iommu"]["enum"].as_array().unwrap() {
        assert!(with("iommu", v.clone()).is_ok(), "{v}");
    }
    assert!(with("iommu", json!("vfio")).is_err());
    let device = &d.vmconfig["$defs"]["Device"]["properties"];
    let device_defaults = serde_json::to_value(
        VmConfig::from_json(r#"{"kernel": {"path": "/k"}, "devices": [{"address": "00:02.0"}]}"#)
            .unwrap()
            .devices[0]
            .clone(),
    )
    .unwrap();
    for k in ["p2p", "rom"] {
        assert_eq!(
            device[k]["default"], device_defaults[k],
            "default of devices[].{k}"
        );
    }
    for v in device["rom"]["oneOf"][0]["enum"].as_array().unwrap() {
        assert!(
            with("devices", json!([{"address": "00:02.0", "rom": v}])).is_ok(),
            "{v}"
        );
    }
    assert!(with("devices", json!([{"address": "00:02.0", "rom": "none"}])).is_err());
    assert!(with(
        "devices",
        json!([{"address": "00:02.0", "rom": {"file": ""}}])
    )
    .is_err());
    assert!(with("devices", json!([{"address": "00:02.0", "p2p": "on"}])).is_err());
    assert!(with("on_reboot", json!("halt")).is_err());
    assert!(with("serial", json!("file")).is_err());
    assert!(
        with("colour", json!("red")).is_err(),
        "additionalProperties: false"
    );
}

fn documented_routes(d: &Docs) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in d.openapi["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn openapi_routes_are_the_routers() {
    let d = Docs::new();
    let code: BTreeSet<(String, String)> = handlers::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented_routes(&d), code);
}

/// Calls `method path` on `b` and checks the status is documented for that operation and
/// the body fits the documented schema.
fn check_call(d: &Docs, b: &dyn Backend, method: &str, path: &str, body: &str) -> u16 {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    let r = handlers::handle(
        b,
        &Request {
            method: method.into(),
            path: p.into(),
            query: query.into(),
            body: body.as_bytes().to_vec(),
        },
    )
    .response;
    let op = &d.openapi["paths"][p][method.to_lowercase()];
    let documented = if op.is_null() {
        // No such operation: only 405 (the path exists) or 404 can come back, documented
        // once under components.
        let name = if r.status == 405 {
            "WrongMethod"
        } else {
            "UnknownRoute"
        };
        &d.openapi["components"]["responses"][name]
    } else {
        &op["responses"][r.status.to_string()]
    };
    assert!(
        documented.is_object(),
        "{method} {path} answered {} which its operation does not document",
        r.status
    );
    let (resp, _) = d.deref(documented, Doc::OpenApi);
    match (&r.body, resp.pointer("/content/application~1json/schema")) {
        (Some(text), Some(schema)) => {
            let v: Value = serde_json::from_str(text).unwrap();
            d.assert_valid(&v, schema, Doc::OpenApi);
        }
        (None, None) => {}
        (body, schema) => panic!("{method} {path}: body {body:?} vs documented {schema:?}"),
    }
    r.status
}

#[test]
fn every_answer_is_documented_for_its_route() {
    let d = Docs::new();
    let b = FakeBackend::default();
    let good = serde_json::to_string(&full_config()).unwrap();
    let calls: &[(&str, &str, &str, u16)] = &[
        ("GET", "/api/v1/vmm.ping", "", 200),
        ("GET", "/api/v1/vm.info", "", 409),
        ("PUT", "/api/v1/vm.boot", "", 409),
        ("PUT", "/api/v1/vm.create", "{", 400),
        ("PUT", "/api/v1/vm.create", &good, 204),
        ("PUT", "/api/v1/vm.create", &good, 409),
        ("GET", "/api/v1/vm.info", "", 200),
        ("PUT", "/api/v1/vm.shutdown", "", 409),
        ("PUT", "/api/v1/vm.reboot", "", 409),
        ("PUT", "/api/v1/vm.boot", "", 204),
        ("GET", "/api/v1/vm.info", "", 200),
        ("PUT", "/api/v1/vm.delete", "", 409),
        ("PUT", "/api/v1/vm.reboot", "", 204),
        ("PUT", "/api/v1/vm.shutdown", "{\"timeout_secs\": -3}", 400),
        ("PUT", "/api/v1/vm.shutdown", "{\"timeout_secs\": 3}", 200),
        ("GET", "/api/v1/vm.info", "", 200),
        ("PUT", "/api/v1/vm.delete", "", 204),
        ("GET", "/api/v1/host?class=all", "", 200),
        ("GET", "/api/v1/host?class=x", "", 400),
        ("GET", "/api/v1/vm.boot", "", 405),
        ("PUT", "/api/v1/vmm.shutdown", "", 204),
    ];
    for (m, p, body, want) in calls {
        assert_eq!(check_call(&d, &b, m, p, body), *want, "{m} {p} {body}");
    }
}

#[test]
fn vm_info_outcomes_and_host_list_match_the_document() {
    let d = Docs::new();
    let running = fake_info(full_config(), VmState::Running);
    let stopped = fake_info(VmConfig::payload("/p.bin"), VmState::Shutdown);
    let mut errored = fake_info(VmConfig::linux("/k"), VmState::Shutdown);
    errored.stopped = Some(StopInfo::Error {
        reason: "error",
        detail: "rebuild failed".into(),
    });
    let created = super::VmBackend::new();
    let dir = super::tests::TempDir::new("docs");
    let k = dir.path().join("k");
    std::fs::write(&k, b"k").unwrap();
    created.create(VmConfig::linux(&k)).unwrap();
    let values: Vec<Value> = [running, stopped, errored, created.info().unwrap()]
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect();
    d.assert_covers(&values, &d.schema("VmInfo"), Doc::OpenApi);

    // Every outcome fits, and every documented reason is one the code gives.
    let outcomes = [
        StopInfo::Outcome(Outcome::PowerOff),
        StopInfo::Outcome(Outcome::Reset),
        StopInfo::Outcome(Outcome::ForcedOff),
        StopInfo::Outcome(Outcome::Signal(15)),
        StopInfo::Outcome(Outcome::VcpuFailed("x".into())),
        StopInfo::Error {
            reason: "error",
            detail: "x".into(),
        },
    ]
    .map(|o| serde_json::to_value(o).unwrap());
    let mut reasons = BTreeSet::new();
    for o in &outcomes {
        d.assert_valid(o, &d.schema("Outcome"), Doc::OpenApi);
        reasons.insert(o["reason"].as_str().unwrap().to_string());
    }
    let documented: BTreeSet<String> = d.openapi["components"]["schemas"]["Outcome"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| {
            b["properties"]["reason"]["enum"]
                .as_array()
                .unwrap()
                .clone()
        })
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, documented);

    // GET /host is `conduit host list --json`: the real inventory of a fake host fits.
    let h = crate::host::testutil::FakeHost::new();
    h.iommu("intel");
    h.pci("0000:17:00.0", "10de:2335", 0x030200)
        .driver("vfio-pci")
        .group(5)
        .numa(0)
        .resource(
            "0x00000000f0000000 0x00000000f0ffffff 0x0000000000040200\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x0000380000000000 0x000038003fffffff 0x000000000014220c\n",
        );
    h.pci("0000:18:00.0", "1234:1111", 0x030000).group(6);
    std::fs::write(
        h.dev_dir("0000:18:00.0").join("driver_override"),
        "vfio-pci\n",
    )
    .unwrap();
    let backend = super::VmBackend::new().with_host_root(h.root());
    let list = backend.host(&Default::default()).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");
    let items = json!({"type": "array", "items": {"$ref": "#/components/schemas/HostDevice"}});
    d.assert_covers(&[list], &items, Doc::OpenApi);

    // The shutdown timeout bound documented is the code's.
    let max = d.openapi["components"]["schemas"]["ShutdownRequest"]["properties"]["timeout_secs"]
        ["maximum"]
        .as_u64()
        .unwrap();
    assert_eq!(max, handlers::MAX_SHUTDOWN_TIMEOUT_SECS);
}
