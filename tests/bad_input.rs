//! The README's bad-input table, row by row: each row marked `host` runs here as its own
//! test (`conduit` with the row's arguments must exit with the row's status and print the
//! row's error exactly); rows marked `rig` need a KVM that runs Linux or VFIO and run in
//! the rig scenario `bad-input`, which reads the same table (listed here as ignored).
//!
//! A hand-written harness (libtest-mimic) because the rows are data: one README table is
//! the contract for users, for these tests and for the rig.

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

/// One row of the table.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    args: String,
    error: String,
    status: i32,
    where_: String,
}

const BEGIN: &str = "<!-- bad-input-table: begin -->";
const END: &str = "<!-- bad-input-table: end -->";

/// The text of a markdown code span: `x` or `` x `` (which may hold backticks).
fn code_span(cell: &str) -> Result<String, String> {
    let c = cell.trim();
    if let Some(inner) = c.strip_prefix("`` ").and_then(|c| c.strip_suffix(" ``")) {
        return Ok(inner.to_string());
    }
    if let Some(inner) = c.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
        if !inner.contains('`') {
            return Ok(inner.to_string());
        }
    }
    Err(format!("not a code span: {c}"))
}

fn parse_table(readme: &str) -> Result<Vec<Row>, String> {
    let start = readme
        .find(BEGIN)
        .ok_or("README.md: no bad-input table begin marker")?;
    let end = readme
        .find(END)
        .ok_or("README.md: no bad-input table end marker")?;
    let mut rows = Vec::new();
    for line in readme[start + BEGIN.len()..end].lines() {
        let line = line.trim();
        if !line.starts_with('|') || line.starts_with("| name") || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let [name, args, error, status, where_] = cells[..] else {
            return Err(format!("README.md: a bad-input row needs 5 cells: {line}"));
        };
        rows.push(Row {
            name: name.to_string(),
            args: code_span(args)?,
            error: code_span(error)?,
            status: status
                .parse()
                .map_err(|_| format!("README.md: row {name}: status {status:?}"))?,
            where_: where_.to_string(),
        });
    }
    Ok(rows)
}

/// Does `text` match `pattern`, where `<n>` in the pattern matches one decimal number?
fn matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once("<n>") {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            digits > 0 && matches(tail, &rest[digits..])
        }
    }
}

/// The files and values the placeholders stand for on this host.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(row: &str) -> std::io::Result<Scratch> {
        let dir =
            std::env::temp_dir().join(format!("conduit-bad-input-{}-{row}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // Only existence is checked before /dev/kvm is opened, which is as far as the
        // host rows go; the rig rows use a real kernel.
        std::fs::write(dir.join("vmlinuz"), b"not looked at by host rows")?;
        std::fs::write(dir.join("truncated.json"), b"{\"kernel\":\n")?;
        std::fs::write(
            dir.join("unknown-field.json"),
            b"{\"kernel\":{\"path\":\"/x\"},\"bogus\":1}\n",
        )?;
        Ok(Scratch { dir })
    }

    fn expand(&self, s: &str) -> String {
        s.replace("$KERNEL", &self.dir.join("vmlinuz").display().to_string())
            .replace("$TMP", &self.dir.display().to_string())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_row(row: &Row) -> Result<(), Failed> {
    let scratch = Scratch::new(&row.name).map_err(|e| format!("scratch dir: {e}"))?;
    let args: Vec<String> = row
        .args
        .split_whitespace()
        .map(|a| scratch.expand(a))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_conduit"))
        .args(&args)
        .env_remove("CONDUIT_LOG")
        .output()
        .map_err(|e| format!("cannot run conduit: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("");
    let want = scratch.expand(&row.error);
    let mut problems = Vec::new();
    if out.status.code() != Some(row.status) {
        problems.push(format!(
            "exit status {:?}, want {}",
            out.status.code(),
            row.status
        ));
    }
    if !matches(&want, first) {
        problems.push(format!("error line\n  got:  {first}\n  want: {want}"));
    }
    // Errors of our own are one line; clap's usage errors (status 2) say more after it.
    if row.status == 1 && stderr.lines().count() != 1 {
        problems.push(format!("want exactly one line on stderr, got:\n{stderr}"));
    }
    if !out.stdout.is_empty() {
        problems.push(format!(
            "stdout should be empty: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("conduit {}: {}", args.join(" "), problems.join("; ")).into())
    }
}

/// The table itself: present, every row parsed, names unique, each row `host` or `rig`.
fn table_is_well_formed(rows: Result<Vec<Row>, String>) -> Trial {
    Trial::test("table_is_well_formed", move || {
        let rows = rows?;
        if rows.len() < 10 {
            return Err(format!("only {} rows in the README's bad-input table", rows.len()).into());
        }
        let mut names = std::collections::HashSet::new();
        for row in &rows {
            if !names.insert(row.name.as_str()) {
                return Err(format!("row {} appears twice", row.name).into());
            }
            if row.where_ != "host" && row.where_ != "rig" {
                return Err(format!(
                    "row {}: where is {:?}, not host or rig",
                    row.name, row.where_
                )
                .into());
            }
            if row.status != 1 && row.status != 2 {
                return Err(format!(
                    "row {}: status {} (errors exit 1, syntax errors 2)",
                    row.name, row.status
                )
                .into());
            }
        }
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let rows = std::fs::read_to_string(&readme)
        .map_err(|e| format!("{}: {e}", readme.display()))
        .and_then(|text| parse_table(&text));
    let mut trials = vec![table_is_well_formed(rows.clone())];
    for row in rows.unwrap_or_default() {
        let (name, kind) = (row.name.clone(), row.where_.clone());
        let trial = if kind == "host" {
            Trial::test(name, move || run_row(&row))
        } else {
            // Run by `tests/rig/run bad-input` (tests/rig.rs); listed so every row shows.
            Trial::test(name, || Ok(())).with_ignored_flag(true)
        };
        trials.push(trial.with_kind(kind));
    }
    libtest_mimic::run(&args, trials).exit();
}
