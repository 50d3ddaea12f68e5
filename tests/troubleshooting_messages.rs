//! docs/troubleshooting.md lists idaas-projector's messages and codes by their text; this keeps
//! the list true to the code.
//!
//! Between the page's `<!-- error-strings: begin` and `<!-- error-strings: end -->` markers:
//! - every code span of a `####` heading, and every other code span holding `…`, is a message or
//!   code that `src/` spells (outside comments and test modules): each part between the `…`s
//!   appears there, with Rust's string continuations (`\` at the end of a line) joined and `\"`
//!   read as `"`;
//! - each fenced block under a `####` heading shows one of that heading's messages: one of its
//!   lines holds the message's parts in order.
//!
//! And every link of the page to one of its own anchors (`](#...)`) names one of its headings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const PAGE: &str = "docs/troubleshooting.md";
const BEGIN: &str = "<!-- error-strings: begin";
const END: &str = "<!-- error-strings: end -->";
/// Stands for the parts of a message that vary.
const VARIES: char = '…';

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The text of `src/` as its string literals read: without test modules and comment lines,
/// string continuations joined, `\"` as `"`.
fn source_text() -> String {
    let mut files = Vec::new();
    rust_files(&repo_path("src"), &mut files);
    files.sort();
    let mut text = String::new();
    for file in files {
        let code = std::fs::read_to_string(&file).unwrap();
        let code = code
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            text.push_str(line);
            text.push('\n');
        }
    }
    join_continuations(&text).replace("\\\"", "\"")
}

/// Rust source with each string continuation (`\` at the end of a line, then the next line's
/// leading white space) removed, as the compiler reads the literal.
fn join_continuations(text: &str) -> String {
    let mut joined = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'\n') {
            chars.next();
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
        } else {
            joined.push(c);
        }
    }
    joined
}

/// The parts of a message between the `…`s that stand for what varies.
fn parts(message: &str) -> Vec<&str> {
    message.split(VARIES).filter(|p| !p.is_empty()).collect()
}

/// Whether `line` holds the parts of `message` in order.
fn shows(line: &str, message: &str) -> bool {
    let mut rest = line;
    parts(message).iter().all(|part| match rest.find(part) {
        Some(i) => {
            rest = &rest[i + part.len()..];
            true
        }
        None => false,
    })
}

/// The code spans of a piece of Markdown (no spans across its end).
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// A `####` entry of the list: its heading's spans and the lines of its fenced blocks.
#[derive(Default)]
struct Entry {
    heading: String,
    messages: Vec<String>,
    blocks: Vec<Vec<String>>,
}

/// The list's entries, and the other code spans holding `…` (by paragraph: spans may wrap).
fn read_list(page: &str) -> (Vec<Entry>, Vec<String>) {
    let start = page.find(BEGIN).expect("the begin marker");
    let end = page.find(END).expect("the end marker");
    let mut entries: Vec<Entry> = Vec::new();
    let mut in_entry = false;
    let mut block: Option<Vec<String>> = None;
    let mut paragraph = String::new();
    let mut spans = Vec::new();
    let flush = |paragraph: &mut String, spans: &mut Vec<String>| {
        assert!(
            paragraph.matches('`').count().is_multiple_of(2),
            "unbalanced ` in: {paragraph}"
        );
        let varying = code_spans(paragraph)
            .into_iter()
            .filter(|s| s.contains(VARIES));
        spans.extend(varying.map(str::to_owned));
        paragraph.clear();
    };
    for line in page[start..end].lines() {
        if line.starts_with("```") {
            match block.take() {
                Some(lines) if in_entry => entries.last_mut().unwrap().blocks.push(lines),
                Some(_) => {}
                None => block = Some(Vec::new()),
            }
        } else if let Some(lines) = &mut block {
            lines.push(line.to_owned());
        } else if let Some(heading) = line.strip_prefix("#### ") {
            flush(&mut paragraph, &mut spans);
            let messages = code_spans(heading).into_iter().map(str::to_owned).collect();
            entries.push(Entry {
                heading: heading.to_owned(),
                messages,
                ..Entry::default()
            });
            in_entry = true;
        } else if line.starts_with('#') {
            flush(&mut paragraph, &mut spans);
            in_entry = false;
        } else if line.trim().is_empty() {
            flush(&mut paragraph, &mut spans);
        } else {
            paragraph.push(' ');
            paragraph.push_str(line.trim());
        }
    }
    flush(&mut paragraph, &mut spans);
    (entries, spans)
}

fn page() -> String {
    std::fs::read_to_string(repo_path(PAGE)).unwrap()
}

#[test]
fn every_listed_message_is_in_the_source() {
    let source = source_text();
    let (entries, spans) = read_list(&page());
    assert!(entries.len() >= 40, "only {} entries", entries.len());
    let mut missing = Vec::new();
    let headings = entries.iter().flat_map(|e| e.messages.iter());
    for message in headings.chain(&spans) {
        let absent: Vec<&str> = parts(message)
            .into_iter()
            .filter(|part| !source.contains(part))
            .collect();
        if parts(message).is_empty() || !absent.is_empty() {
            missing.push(format!("`{message}`: not in src/: {absent:?}"));
        }
    }
    assert!(missing.is_empty(), "{PAGE}:\n{}", missing.join("\n"));
}

#[test]
fn every_heading_has_a_message_and_every_example_shows_one() {
    let (entries, _) = read_list(&page());
    for entry in &entries {
        assert!(
            !entry.messages.is_empty(),
            "no `message` in the heading {:?}",
            entry.heading
        );
        for block in &entry.blocks {
            let shown = block
                .iter()
                .any(|line| entry.messages.iter().any(|m| shows(line, m)));
            assert!(
                shown,
                "{:?}: the example shows none of its messages:\n{}",
                entry.heading,
                block.join("\n")
            );
        }
    }
}

/// GitHub's anchor for a heading: lowercase; letters, digits, `-` and `_` kept, spaces as `-`,
/// the rest dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_link_within_the_page_has_its_heading() {
    let page = page();
    let mut anchors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut fenced = false;
    for line in page.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            let a = anchor(line.trim_start_matches('#').trim());
            let count = seen.entry(a.clone()).or_default();
            anchors.push(if *count == 0 {
                a
            } else {
                format!("{a}-{count}")
            });
            *count += 1;
        }
    }
    let links: Vec<&str> = page
        .split("](#")
        .skip(1)
        .map(|rest| rest.split(')').next().unwrap())
        .collect();
    assert!(links.len() > 10, "{links:?}");
    let broken: Vec<&&str> = links
        .iter()
        .filter(|l| !anchors.iter().any(|a| a == *l))
        .collect();
    assert!(broken.is_empty(), "{PAGE}: links to no heading: {broken:?}");
}

#[test]
fn the_checks_catch_drift() {
    let source = "format!(\"no usable token in {} after {}: the file \\\n     is {state}\")";
    assert!(shows(
        "no usable token in /t after 5m: the file is missing",
        "no usable token in … after …: the file is …"
    ));
    assert!(!shows(
        "the file is missing after 5m",
        "… after …: the file is …"
    ));
    assert_eq!(parts("… is not … name"), [" is not ", " name"]);
    assert_eq!(code_spans("a `b` c `d …`"), ["b", "d …"]);
    assert_eq!(
        anchor("The init container (`idaas-projector-wait`)"),
        "the-init-container-idaas-projector-wait"
    );
    assert_eq!(
        anchor("3. Does RAM accept it? `assume-role`"),
        "3-does-ram-accept-it-assume-role"
    );
    // A continuation inside a literal is joined as the compiler joins it.
    assert!(join_continuations(source).contains(": the file is {state}"));
}
