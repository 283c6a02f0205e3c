//! The example plugin: counts the lines, words and bytes of a file in the mission's
//! workspace, and with `save_to` also writes the counts there as JSON.
//!
//! Input (stdin): `{"path": "notes.txt", "save_to": "counts.json"}` (`save_to` optional).
//! Answer (stdout): `{"path": …, "lines": …, "words": …, "bytes": …}`.

use std::io::Read as _;
use std::process::ExitCode;

fn field<'a>(input: &'a str, name: &str) -> Option<&'a str> {
    // A deliberately tiny reader of one string member, so the plugin needs no crates.
    let key = format!("\"{name}\"");
    let rest = &input[input.find(&key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

fn main() -> ExitCode {
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("cannot read the arguments");
        return ExitCode::from(2);
    }
    let Some(path) = field(&input, "path") else {
        eprintln!("`path` is required");
        return ExitCode::from(2);
    };
    if path.starts_with('/') || path.split('/').any(|p| p == "..") {
        eprintln!("`path` must be relative to the workspace");
        return ExitCode::from(2);
    }
    let text = match std::fs::read(format!("/workspace/{path}")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::from(1);
        }
    };
    let s = String::from_utf8_lossy(&text);
    let answer = format!(
        "{{\"path\":\"{}\",\"lines\":{},\"words\":{},\"bytes\":{}}}",
        escape(path),
        s.lines().count(),
        s.split_whitespace().count(),
        text.len()
    );
    if let Some(out) = field(&input, "save_to") {
        if out.starts_with('/') || out.split('/').any(|p| p == "..") {
            eprintln!("`save_to` must be relative to the workspace");
            return ExitCode::from(2);
        }
        if let Err(e) = std::fs::write(format!("/workspace/{out}"), &answer) {
            eprintln!("cannot write {out}: {e}");
            return ExitCode::from(1);
        }
    }
    println!("{answer}");
    ExitCode::SUCCESS
}
