//! The JSON schema of docs/json.md, read from its tables, and a check of printed objects
//! against it: the documentation is the contract the tests hold the commands to.
use serde_json::Value;
use std::collections::BTreeMap;

fn doc() -> String {
    std::fs::read_to_string(super::root().join("docs/json.md")).expect("docs/json.md")
}

/// The lines of the section whose heading starts with ``## `atelier COMMAND``.
fn section(command: &str) -> Vec<String> {
    let heading = format!("## `atelier {command}");
    let text = doc();
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&heading));
    assert!(
        lines.next().is_some(),
        "docs/json.md has no section {heading}…"
    );
    lines
        .take_while(|l| !l.starts_with("## "))
        .map(str::to_string)
        .collect()
}

/// The cells of a table row (`|` escaped as `\|` inside a cell stays).
fn cells(line: &str) -> Vec<String> {
    let line = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

fn unquote(cell: &str) -> String {
    cell.trim_matches('`').to_string()
}

/// The `field | type` table of a section: field path -> allowed types.
pub fn fields(command: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut in_table = false;
    for line in section(command) {
        if line.starts_with("| field | type |") {
            in_table = true;
            continue;
        }
        if in_table {
            if !line.starts_with('|') {
                break;
            }
            if line.starts_with("|---") {
                continue;
            }
            let c = cells(&line);
            let types = c[1].split('|').map(|t| t.trim().to_string()).collect();
            out.insert(unquote(&c[0]), types);
        }
    }
    assert!(
        !out.is_empty(),
        "docs/json.md: no field table for {command}"
    );
    out
}

/// The extra fields of each event in the `event | fields` table of a section.
pub fn event_fields(command: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let mut in_table = false;
    for line in section(command) {
        if line.starts_with("| event | fields |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let c = cells(&line);
        let mut fields = BTreeMap::new();
        // `name` (type…), …
        let mut rest = c[1].as_str();
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('`') else { break };
            let name = &after[..end];
            let tail = after[end + 1..].trim_start();
            if let Some(inner) = tail.strip_prefix('(') {
                let ty: String = inner
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic() || *c == '|')
                    .collect();
                fields.insert(
                    name.to_string(),
                    ty.split('|').map(str::to_string).collect(),
                );
            }
            rest = &after[end + 1..];
        }
        out.insert(unquote(&c[0]), fields);
    }
    assert!(
        !out.is_empty(),
        "docs/json.md: no event table for {command}"
    );
    out
}

fn type_ok(v: &Value, types: &[String]) -> bool {
    types.iter().any(|t| match t.as_str() {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "bool" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "null" => v.is_null(),
        other => panic!("docs/json.md: unknown type {other}"),
    })
}

/// Every value at `path` (`a.b`, `a[].b`) in `v`; `None` when a part is missing.
fn values_at<'a>(v: &'a Value, path: &str) -> Option<Vec<&'a Value>> {
    let mut current = vec![v];
    for part in path.split('.') {
        let (name, each) = match part.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (part, false),
        };
        let mut next = Vec::new();
        for c in current {
            // A null parent (a `T|null` object) has no children to check.
            if c.is_null() {
                continue;
            }
            let child = c.get(name)?;
            if each {
                next.extend(child.as_array()?.iter());
            } else {
                next.push(child);
            }
        }
        current = next;
    }
    Some(current)
}

/// Problems of `v` against a field table.
pub fn problems(v: &Value, fields: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, types) in fields {
        match values_at(v, path) {
            None => out.push(format!("{path}: missing")),
            Some(values) => {
                for value in values {
                    if !type_ok(value, types) {
                        out.push(format!("{path}: {value} is not {}", types.join("|")));
                    }
                }
            }
        }
    }
    out
}

/// Asserts that `v` has every field docs/json.md lists for `command`, of its type.
pub fn check(command: &str, v: &Value) {
    let problems = problems(v, &fields(command));
    assert!(
        problems.is_empty(),
        "`atelier {command}` output differs from docs/json.md: {problems:#?}\nin {v:#}"
    );
}

/// Parses each stdout line as JSON and checks it (at least one line).
pub fn check_lines(command: &str, stdout: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(stdout);
    let values: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("`atelier {command}` printed a line that is not JSON ({e}): {l}")
            })
        })
        .collect();
    assert!(!values.is_empty(), "`atelier {command}` printed nothing");
    for v in &values {
        check(command, v);
    }
    values
}

/// Checks one `watch --json` event: the common fields and its event's own.
pub fn check_event(v: &Value) {
    check("watch", v);
    let events = event_fields("watch");
    let name = v["event"].as_str().unwrap();
    let own = events
        .get(name)
        .unwrap_or_else(|| panic!("docs/json.md lists no event {name}: {v}"));
    let problems = problems(v, own);
    assert!(problems.is_empty(), "event {name}: {problems:#?} in {v}");
}
