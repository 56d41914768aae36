//! Tidy: the checks that keep the house in order, in the style of rust-analyzer's `tidy.rs`.
//! They read the source tree as text; none runs hookd. Each failure says what to do.
//!
//! - The modules of src/ import each other in one direction: the `crate::` graph has no cycle,
//!   and every import goes down the layers ARCHITECTURE.md draws.
//! - lib.rs's layout and ARCHITECTURE.md's codemap name every module of src/, and nothing else.
//! - No src file over [`MAX_FILE_LINES`], no function over [`MAX_FN_LINES`].
//! - Every relative link in README.md, ARCHITECTURE.md and docs/*.md reaches its file and heading.
//!
//! `cargo test --test tidy -- --nocapture` also prints the module graph and its layers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 1000;
const MAX_FN_LINES: usize = 80;

/// Today's exceptions to the size limits, as `(path, function or "")`. Empty: keep it so.
const ALLOWED_LONG: &[(&str, &str)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir` whose name ends with `ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(ext) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

// ------------------------------------------------------------------ the module graph

/// The top-level modules of the library: `src/<m>.rs` and `src/<m>/mod.rs`.
fn modules() -> BTreeSet<String> {
    let src = root().join("src");
    let mut out = BTreeSet::new();
    for entry in fs::read_dir(&src).expect("src/") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let directory = path.is_dir() && path.join("mod.rs").exists();
        let file = path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main";
        if directory || file {
            out.insert(name);
        }
    }
    out
}

/// The code of a file without its tests: a `#[cfg(test)] mod tests` and what follows, and
/// files that are test modules themselves, do not count as imports.
fn without_tests(path: &Path, text: &str) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let cut = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..cut]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names through `crate::`, in paths and in
/// `use crate::{a, b::c}` groups.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let word = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(word(group[start..j].trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(word(group[start..j].trim()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(word(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// module → the modules it names → one place where it names each.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn module_graph() -> Graph {
    let modules = modules();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    let src = root().join("src");
    for path in files(&src, ".rs") {
        let rel = path.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = Path::new(first.as_os_str())
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if !modules.contains(&module) {
            continue;
        }
        let code = without_tests(&path, &read(&path));
        for target in named_modules(&code) {
            if target != module && modules.contains(&target) {
                graph
                    .get_mut(&module)
                    .expect("every module is in the graph")
                    .entry(target)
                    .or_insert_with(|| relative(&path));
            }
        }
    }
    graph
}

/// The cycles of the graph: its strongly connected components of more than one module.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Kosaraju: order by finish time, then walk the reversed graph.
    fn visit(graph: &Graph, m: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(m.to_string()) {
            return;
        }
        for next in graph[m].keys() {
            visit(graph, next, seen, order);
        }
        order.push(m.to_string());
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for m in graph.keys() {
        visit(graph, m, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos.keys() {
            reversed.entry(to).or_default().push(from);
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for m in order.iter().rev() {
        if assigned.contains(m.as_str()) {
            continue;
        }
        let mut component = Vec::new();
        let mut stack = vec![m.as_str()];
        while let Some(n) = stack.pop() {
            if assigned.insert(n.to_string()) {
                component.push(n.to_string());
                stack.extend(reversed.get(n).into_iter().flatten().copied());
            }
        }
        if component.len() > 1 {
            component.sort();
            out.push(component);
        }
    }
    out
}

/// ARCHITECTURE.md's layers, bottom first: the lines of its `tidy:layers` block, each
/// `N. name: module, module`.
fn layers(architecture: &str) -> Vec<(String, Vec<String>)> {
    let start = architecture
        .find("<!-- tidy:layers -->")
        .expect("ARCHITECTURE.md has a <!-- tidy:layers --> block: the layers, bottom first");
    let end = architecture[start..]
        .find("<!-- /tidy:layers -->")
        .expect("the layers block ends with <!-- /tidy:layers -->");
    architecture[start..start + end]
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches(|c: char| c.is_ascii_digit());
            let (name, list) = line.strip_prefix(". ")?.split_once(':')?;
            let modules = list
                .split(',')
                .map(|m| m.trim().trim_matches('`').to_string())
                .filter(|m| !m.is_empty())
                .collect();
            Some((name.trim().to_string(), modules))
        })
        .collect()
}

#[test]
fn the_modules_import_each_other_in_one_direction() {
    let graph = module_graph();
    println!("The module graph of src/ (module -> the modules it imports):");
    for (m, tos) in &graph {
        let tos: Vec<&str> = tos.keys().map(String::as_str).collect();
        println!("  {m} -> {}", tos.join(", "));
    }
    let cycles = cycles(&graph);
    println!("Import circles: {cycles:?}");
    assert!(
        cycles.is_empty(),
        "these modules import each other in a circle: {cycles:?}.\n\
         Move the type or function one of them needs to the lowest module that needs it \
         (ARCHITECTURE.md, Layers), or pass it in from above. Edges:\n{}",
        cycles
            .iter()
            .flatten()
            .flat_map(|m| graph[m]
                .iter()
                .filter(|(to, _)| cycles.iter().any(|c| c.contains(to)))
                .map(move |(to, at)| format!("  {m} -> {to} (in {at})\n")))
            .collect::<String>()
    );

    let layers = layers(&read(&root().join("ARCHITECTURE.md")));
    println!("Layers, bottom first:");
    let mut level = BTreeMap::new();
    for (i, (name, modules)) in layers.iter().enumerate() {
        println!("  {}. {name}: {}", i + 1, modules.join(", "));
        for m in modules {
            assert!(
                level.insert(m.clone(), i).is_none(),
                "ARCHITECTURE.md's layers name `{m}` twice: give each module one layer"
            );
        }
    }
    let mut problems = Vec::new();
    for m in graph.keys() {
        if !level.contains_key(m) {
            problems.push(format!(
                "module `{m}` is in no layer: add it to ARCHITECTURE.md's layers block"
            ));
        }
    }
    for m in level.keys() {
        if !graph.contains_key(m) {
            problems.push(format!(
                "ARCHITECTURE.md's layers name `{m}`, which is no module of src/: remove it"
            ));
        }
    }
    for (from, tos) in &graph {
        for (to, at) in tos {
            if let (Some(a), Some(b)) = (level.get(from), level.get(to)) {
                if a <= b {
                    problems.push(format!(
                        "`{from}` (layer {}) imports `{to}` (layer {}) in {at}: a module imports \
                         only from layers below its own; move what it needs down, or redraw \
                         the layers in ARCHITECTURE.md if the design changed",
                        a + 1,
                        b + 1
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------ the maps

/// The module names a text links as [`name`] or [`name::item`].
fn linked_modules(text: &str) -> BTreeSet<String> {
    text.match_indices("[`")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

#[test]
fn lib_rs_layout_names_every_module_and_no_other() {
    let lib = read(&root().join("src/lib.rs"));
    let layout: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .skip_while(|l| !l.contains("# Layout"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !layout.is_empty(),
        "src/lib.rs opens with a `//! # Layout` section listing its modules"
    );
    let listed: BTreeSet<String> = layout
        .lines()
        .filter_map(|l| l.trim_start_matches("//!").trim().strip_prefix("- [`"))
        .map(|l| l.chars().take_while(|c| *c != '`' && *c != ':').collect())
        .collect();
    let modules = modules();
    let missing: Vec<_> = modules.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "src/lib.rs's layout misses these modules: {missing:?}; add a line `//! - [`name`]: what it holds` for each"
    );
    let unknown: Vec<_> = linked_modules(&layout)
        .into_iter()
        .filter(|m| !modules.contains(m))
        .collect();
    assert!(
        unknown.is_empty(),
        "src/lib.rs's layout names modules that do not exist: {unknown:?}; remove or rename them"
    );
}

#[test]
fn architecture_codemap_names_every_module_and_only_paths_that_exist() {
    let text = read(&root().join("ARCHITECTURE.md"));
    let start = text
        .find("## Codemap")
        .expect("ARCHITECTURE.md has a `## Codemap` section");
    let codemap = &text[start..];
    let codemap = &codemap[..codemap[3..].find("\n## ").map_or(codemap.len(), |e| e + 3)];
    let mut problems = Vec::new();
    for m in modules() {
        let (file, dir) = (format!("`src/{m}.rs`"), format!("`src/{m}/"));
        if !codemap.contains(&file) && !codemap.contains(&dir) {
            problems.push(format!(
                "ARCHITECTURE.md's codemap misses module `{m}`: add a `src/{m}...` entry saying what it holds"
            ));
        }
    }
    for (i, _) in text.match_indices("`src/") {
        let path: String = text[i + 1..].chars().take_while(|c| *c != '`').collect();
        let path = path.trim_end_matches('/');
        if path.contains('*') || path.contains(' ') || path.contains("...") {
            continue;
        }
        if !root().join(path).exists() {
            problems.push(format!(
                "ARCHITECTURE.md names `{path}`, which does not exist: update the map"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------ sizes

/// The functions of a file longer than `max` lines, as `(name, first line, length)`: from the
/// `fn` line to the closing brace at its indentation, both included.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let signature = trimmed
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("const ")
            .trim_start_matches("async ")
            .trim_start_matches("unsafe ");
        let Some(rest) = signature.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body ends with `;` before any `{`.
        let Some(open) =
            (i..lines.len()).find(|&j| lines[j].contains('{') || lines[j].ends_with(';'))
        else {
            continue;
        };
        if !lines[open].contains('{') || lines[open].trim_end().ends_with('}') {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j].trim_end() == close) {
            let length = end - i + 1;
            if length > max {
                out.push((name, i + 1, length));
            }
        }
    }
    out
}

#[test]
fn no_src_file_or_function_is_too_long() {
    let mut problems = Vec::new();
    for path in files(&root().join("src"), ".rs") {
        let rel = relative(&path);
        let text = read(&path);
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES && !ALLOWED_LONG.contains(&(rel.as_str(), "")) {
            problems.push(format!(
                "{rel} has {lines} lines (at most {MAX_FILE_LINES}): split it on its seams, \
                 each new file opening with a line that says what it holds"
            ));
        }
        for (name, at, length) in long_functions(&text, MAX_FN_LINES) {
            if !ALLOWED_LONG.contains(&(rel.as_str(), name.as_str())) {
                problems.push(format!(
                    "{rel}:{at}: fn {name} has {length} lines (at most {MAX_FN_LINES}): split \
                     it into named steps that read as the story of what happens"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_length_checks_find_what_they_should() {
    let long = format!("fn a() {{\n{}}}\n", "    x();\n".repeat(MAX_FN_LINES - 1));
    assert_eq!(long_functions(&long, MAX_FN_LINES).len(), 1);
    let fits = format!("fn a() {{\n{}}}\n", "    x();\n".repeat(MAX_FN_LINES - 2));
    assert!(long_functions(&fits, MAX_FN_LINES).is_empty());
    let declared = "trait T {\n    fn a(&self);\n}\n";
    assert!(long_functions(declared, 0).is_empty());
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .fold(BTreeMap::new(), |mut g, (from, to)| {
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string(), String::new());
            g.entry(to.to_string()).or_default();
            g
        });
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        named_modules("use crate::{a::X, b::{Y, Z}, c};\nlet v = crate::d::f();"),
        ["a", "b", "c", "d"].map(String::from).into_iter().collect()
    );
}

// ------------------------------------------------------------------ links

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks), with GitHub's `-1`, `-2`
/// for repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in prose_lines(text) {
        if let Some(heading) = line.strip_prefix('#') {
            let heading = heading.trim_start_matches('#').replace('`', "");
            let base = anchor(&heading);
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            *n += 1;
        }
    }
    out
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The targets of a line's Markdown links `[text](target)`, outside inline code.
fn link_targets(line: &str) -> Vec<String> {
    let mut prose = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            prose.push_str(part);
        }
    }
    prose
        .match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &prose[i + 2..];
            let end = rest.find(')')?;
            Some(rest[..end].split_whitespace().next()?.to_string())
        })
        .collect()
}

#[test]
fn relative_links_in_the_docs_reach_their_file_and_heading() {
    let mut docs = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    docs.extend(files(&root().join("docs"), ".md"));
    let mut problems = Vec::new();
    for doc in &docs {
        let text = read(doc);
        let mut fenced = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            if fenced {
                continue;
            }
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, heading) = target.split_once('#').unwrap_or((target.as_str(), ""));
                let path = if file.is_empty() {
                    doc.clone()
                } else {
                    doc.parent().expect("a directory").join(file)
                };
                let at = format!("{}:{}", relative(doc), n + 1);
                if !path.exists() {
                    problems.push(format!(
                        "{at}: the link to {target} names a file that does not exist: fix the path"
                    ));
                } else if !heading.is_empty()
                    && path.extension().is_some_and(|e| e == "md")
                    && !anchors(&read(&path)).contains(heading)
                {
                    problems.push(format!(
                        "{at}: the link to {target} names a heading {} does not have: link an \
                         existing heading (its anchor is the heading in lower case, spaces as \
                         hyphens, punctuation dropped)",
                        relative(&path)
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
