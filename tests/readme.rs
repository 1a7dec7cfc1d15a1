//! The documentation, run: the shell recipes of README.md and docs/*.md against a real
//! `hopper serve`, so that every recipe works verbatim from a fresh clone.
//!
//! Every shell block (a fence of `sh`) carries a marker in an HTML comment right above:
//!
//! - `<!-- recipe: NAME -->`: run by this test;
//! - `<!-- recipe: NAME (needs PostgreSQL) -->`: run on the PostgreSQL server of
//!   `HOPPER_TEST_POSTGRES` (the page's trial is ignored without it);
//! - `<!-- not run: REASON -->`: shown, not run (a server in the foreground, the test
//!   suite itself, a benchmark).
//!
//! The recipes of a page run in order, in one `bash -euo pipefail`, as a reader pastes
//! them into one terminal: what one recipe sets, the next one uses. They run in a fresh
//! directory, the reader's clone, holding `./target/release/hopper` (this build's
//! binary; `cargo run --release -- ARGS` runs it too), next to the server the README's
//! quick start starts: `hopper serve` with `HOPPER_ADMIN_SECRET=change-me-admin-secret`
//! on `./data/hopper.db`. Every `127.0.0.1:PORT` of a page (the quick start's 8080
//! included) is moved to a free port, so pages run side by side and next to whatever
//! already listens here; an address after `@` (a database URL) is kept.
//!
//! A command whose line ends in `# → TEXT` must print TEXT, where `…` stands for any
//! text. A command that fails, or prints something else, fails the page's trial with
//! the recipe, its output and its exit status.
//!
//! `<!-- config: NAME -->` marks a block holding a whole configuration file (a `toml`
//! block, or a recipe that writes one with a heredoc): each must load as
//! `hopper serve --config` loads it. `tests/seeds.rs` tests the replaced systems'
//! configurations in depth.
//!
//! The pages are also held to what a fresh clone has: no link leaves the repository
//! or names a file or heading that does not exist, and docs/api.md names every
//! operation of the server's own `/openapi.json`, and no other. And `hopper --help`
//! says what Hopper serves; `hopper serve --help`, what `HOPPER_ADMIN_SECRET` and
//! `RUST_LOG` do.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{trials, Backend, PgSchema};
use hopper::config::{Config, Overrides};
use tokio::io::AsyncReadExt;

trials! {
    once {
        readme_recipes_run,
        api_recipes_run,
        replacing_recipes_run,
        configuration_recipes_run,
        monitoring_recipes_run,
        sqs_recipes_run,
        the_api_page_names_every_operation_the_server_describes,
    }
    postgres {
        storage_recipes_run,
    }
    redis_backend {
        readme_recipes_run_on_redis,
    }
    plain {
        every_shell_block_is_marked_and_every_page_with_recipes_is_run,
        an_expectation_comment_checks_the_output,
        every_marked_configuration_loads,
        links_stay_in_the_repository_and_resolve,
        help_says_what_hopper_serves,
    }
}

/// The secret the README's quick start gives the bootstrap admin.
const QUICK_START_SECRET: &str = "change-me-admin-secret";

/// The quick-start server's address, as the pages write it.
const QUICK_START_ADDRESS: &str = "127.0.0.1:8080";

/// The PostgreSQL store the pages write; the test's own schema replaces it.
const PAGE_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test?schema=hopper";

/// The longest a page's recipes may run, all together.
const PAGE_TIMEOUT: Duration = Duration::from_secs(45);

/// The pages whose recipes a trial runs. A page with recipes must be listed here.
const PAGES_RUN: [&str; 7] = [
    "README.md",
    "docs/api.md",
    "docs/replacing.md",
    "docs/configuration.md",
    "docs/storage.md",
    "docs/monitoring.md",
    "docs/sqs.md",
];

/// What a page's recipes need on the machine.
const TOOLS: [&str; 4] = ["bash", "curl", "jq", "python3"];

async fn readme_recipes_run() {
    run_page_on("README.md", None, None).await;
}

/// The README unchanged, with `HOPPER_STORE` naming a Redis store for the server and
/// for every `hopper` command of the recipes.
async fn readme_recipes_run_on_redis(backend: Backend) {
    let store = backend.isolated_store();
    run_page_on("README.md", None, Some(&store.url)).await;
}

async fn api_recipes_run() {
    run_page_on("docs/api.md", None, None).await;
}

async fn replacing_recipes_run() {
    run_page_on("docs/replacing.md", None, None).await;
}

async fn configuration_recipes_run() {
    run_page_on("docs/configuration.md", None, None).await;
}

async fn sqs_recipes_run() {
    run_page_on("docs/sqs.md", None, None).await;
}

async fn monitoring_recipes_run() {
    run_page_on("docs/monitoring.md", None, None).await;
}

async fn storage_recipes_run(backend: Backend) {
    let Backend::Postgres { base_url } = backend else {
        panic!("the storage page's recipes need PostgreSQL");
    };
    run_page_on("docs/storage.md", Some(&base_url), None).await;
}

// ---------------------------------------------------------------------------------
// Pages and their blocks.

/// A page of the documentation.
struct Page {
    /// Its path from the repository's root, e.g. `docs/api.md`.
    path: String,
    text: String,
}

impl Page {
    fn read(path: &str) -> Page {
        let text = std::fs::read_to_string(root().join(path))
            .unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        Page {
            path: path.to_owned(),
            text,
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, then every docs/*.md by name.
fn pages() -> Vec<Page> {
    let mut paths: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("a readable docs/ entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    paths.sort();
    paths.insert(0, "README.md".to_owned());
    paths.iter().map(|path| Page::read(path)).collect()
}

/// What the marker above a shell block says.
#[derive(Debug, Clone, PartialEq)]
enum Marker {
    /// Run it; on PostgreSQL when `postgres`.
    Recipe { name: String, postgres: bool },
    /// Show it only; the marker says why.
    NotRun,
}

/// A fenced block of a page.
#[derive(Debug, Clone)]
struct Block {
    /// The fence's language: `sh`, `toml`, ...
    language: String,
    /// The line (from 1) of its first line of content.
    first_line: usize,
    /// Its content, each line ending with a newline.
    text: String,
    /// Its `recipe` or `not run` marker.
    marker: Option<Marker>,
    /// The name of its `config` marker.
    config: Option<String>,
}

impl Block {
    fn is_shell(&self) -> bool {
        matches!(
            self.language.as_str(),
            "sh" | "bash" | "shell" | "console" | "zsh"
        )
    }

    fn recipe_name(&self) -> &str {
        match &self.marker {
            Some(Marker::Recipe { name, .. }) => name,
            _ => "",
        }
    }
}

/// The fenced blocks of `page`, with their markers; an error names the line of a
/// marker that does not fit, or of a fence that is never closed.
fn blocks(page: &Page) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = page.text.lines().collect();
    let mut blocks = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let Some(info) = lines[index].trim_start().strip_prefix("```") else {
            index += 1;
            continue;
        };
        let fence = index;
        let language = info.split_whitespace().next().unwrap_or("").to_owned();
        let close = (fence + 1..lines.len())
            .find(|&i| lines[i].trim() == "```")
            .ok_or_else(|| format!("{}:{}: the block is never closed", page.path, fence + 1))?;
        let text: String = lines[fence + 1..close]
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        let (marker, config) = markers_above(page, &lines, fence)?;
        blocks.push(Block {
            language,
            first_line: fence + 2,
            text,
            marker,
            config,
        });
        index = close + 1;
    }
    Ok(blocks)
}

/// The `recipe`/`not run` and `config` markers in the HTML comments right above the
/// fence on line `fence` (from 0).
fn markers_above(
    page: &Page,
    lines: &[&str],
    fence: usize,
) -> Result<(Option<Marker>, Option<String>), String> {
    let mut marker = None;
    let mut config = None;
    for line in lines[..fence].iter().rev() {
        let line = line.trim();
        let Some(comment) = line
            .strip_prefix("<!--")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            break;
        };
        let comment = comment.trim();
        let found = if let Some(name) = comment.strip_prefix("recipe:") {
            let name = name.trim();
            let (name, postgres) = match name.strip_suffix("(needs PostgreSQL)") {
                Some(name) => (name.trim(), true),
                None => (name, false),
            };
            Some(Marker::Recipe {
                name: name.to_owned(),
                postgres,
            })
        } else if comment.starts_with("not run:") {
            Some(Marker::NotRun)
        } else if let Some(name) = comment.strip_prefix("config:") {
            config = Some(name.trim().to_owned());
            None
        } else {
            None
        };
        if let Some(found) = found {
            if marker.is_some() {
                return Err(format!(
                    "{}:{}: two recipe or not-run markers above one block",
                    page.path,
                    fence + 1
                ));
            }
            marker = Some(found);
        }
    }
    Ok((marker, config))
}

/// The first heredoc's body in `text`, if any.
fn heredoc_body(text: &str) -> Option<String> {
    let mut lines = text.lines();
    let terminator = lines.by_ref().find_map(heredoc_terminator)?;
    let body: Vec<&str> = lines.take_while(|line| line.trim() != terminator).collect();
    Some(body.iter().map(|line| format!("{line}\n")).collect())
}

/// The word that ends the heredoc a command line opens (`<<'EOF'`, `<<EOF`, `<<-EOF`).
fn heredoc_terminator(line: &str) -> Option<String> {
    let mut rest = line;
    while let Some(at) = rest.find("<<") {
        let after = &rest[at + 2..];
        if let Some(here_string) = after.strip_prefix('<') {
            // A here-string, `<<<`.
            rest = here_string;
            continue;
        }
        let after = after.strip_prefix('-').unwrap_or(after).trim_start();
        let word: String = match after.chars().next() {
            Some(quote @ ('\'' | '"')) => after[1..].chars().take_while(|&c| c != quote).collect(),
            _ => after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect(),
        };
        if !word.is_empty() {
            return Some(word);
        }
        rest = after;
    }
    None
}

// ---------------------------------------------------------------------------------
// Turning recipes into one script.

/// What every page's script starts with: errors name the failing command, a
/// mismatched output stops the script, and `cargo run --release --` runs the binary.
const PREAMBLE: &str = r#"exec 2>&1
trap 'printf "\n[readme test] exit status %s from: %s\n" "$?" "$BASH_COMMAND"' ERR
__mismatch() { printf '\n[readme test] %s: the output above is not what its comment says: %s\n' "$1" "$2"; exit 99; }
cargo() {
  if [ "$#" -ge 3 ] && [ "$1 $2 $3" = "run --release --" ]; then shift 3; ./target/release/hopper "$@"
  else printf '[readme test] recipes may run cargo only as "cargo run --release -- ARGS", not: cargo %s\n' "$*"; return 1
  fi
}
"#;

/// Starts a line of the script's output that says which recipe runs next.
const BLOCK_MARK: char = '\u{1e}';

/// The separator of a command and the output its line promises.
const EXPECTATION: &str = " # → ";

/// `text` quoted for bash, literally.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A bash pattern matching `expected`, where `…` matches any text.
fn pattern(expected: &str) -> String {
    expected
        .split('…')
        .map(quoted)
        .collect::<Vec<_>>()
        .join("*")
}

/// The recipe `text` (starting on line `first_line` of `page`) with each command that
/// ends in `# → TEXT` turned into the command, its output, and a check of the output.
fn with_checks(page: &str, first_line: usize, text: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut script = String::new();
    let mut heredoc: Option<String> = None;
    let mut index = 0;
    while index < lines.len() {
        if let Some(terminator) = &heredoc {
            if lines[index].trim() == terminator {
                heredoc = None;
            }
            script.push_str(lines[index]);
            script.push('\n');
            index += 1;
            continue;
        }
        // A command continued with `\`, or by a quote left open, spans lines; its
        // expectation is on the last one.
        let mut last = index;
        let mut quote = Quote::None;
        loop {
            quote = quote.after(lines[last]);
            let continued = quote != Quote::None || lines[last].ends_with('\\');
            if !continued || last + 1 == lines.len() {
                break;
            }
            last += 1;
        }
        let command = &lines[index..=last];
        let opened = command.iter().find_map(|line| heredoc_terminator(line));
        let line_number = first_line + last;
        match lines[last].rfind(EXPECTATION) {
            Some(at) => {
                if opened.is_some() {
                    return Err(format!(
                        "{page}:{line_number}: a command with a heredoc cannot promise an output"
                    ));
                }
                let expected = lines[last][at + EXPECTATION.len()..].trim();
                let mut text: Vec<&str> = command[..command.len() - 1].to_vec();
                text.push(lines[last][..at].trim_end());
                script.push_str(&format!(
                    "__out=$({})\nprintf '%s\\n' \"$__out\"\n[[ $__out == {} ]] || __mismatch {} {}\n",
                    text.join("\n"),
                    pattern(expected),
                    quoted(&format!("{page}:{line_number}")),
                    quoted(expected),
                ));
            }
            None => {
                for line in command {
                    script.push_str(line);
                    script.push('\n');
                }
            }
        }
        heredoc = opened;
        index = last + 1;
    }
    match heredoc {
        Some(terminator) => Err(format!(
            "{page}:{first_line}: a heredoc is not closed by {terminator}"
        )),
        None => Ok(script),
    }
}

/// The quote a shell line leaves open, for commands whose quoted text spans lines.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Quote {
    None,
    Single,
    Double,
}

impl Quote {
    /// The quote open after `line`, given the one open before it; a comment ends the
    /// scan, a backslash escapes the next character (outside single quotes).
    fn after(self, line: &str) -> Quote {
        let mut quote = self;
        let mut chars = line.chars().peekable();
        let mut word_start = true;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Quote::None, '#') if word_start => break,
                (Quote::None, '\\') | (Quote::Double, '\\') => {
                    chars.next();
                }
                (Quote::None, '\'') => quote = Quote::Single,
                (Quote::None, '"') => quote = Quote::Double,
                (Quote::Single, '\'') | (Quote::Double, '"') => quote = Quote::None,
                _ => {}
            }
            word_start = quote == Quote::None && c.is_whitespace();
        }
        quote
    }
}

/// The ports of `127.0.0.1:PORT` in `text`, except after `@` (a database URL's host).
fn ports(text: &str) -> Vec<u16> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("127.0.0.1:") {
        if text[..at].ends_with('@') {
            continue;
        }
        let digits: String = text[at + "127.0.0.1:".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(port) = digits.parse() {
            found.push(port);
        }
    }
    found
}

/// `text` with each `127.0.0.1:PORT` of `moved` moved to its new port.
fn moved_ports(text: &str, moved: &BTreeMap<u16, u16>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("127.0.0.1:") {
        let after_host = at + "127.0.0.1:".len();
        out.push_str(&rest[..after_host]);
        let digits: String = rest[after_host..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        // The port of a URL with credentials (a database's) is not the page's to move.
        let database = rest[..at].ends_with('@');
        match digits.parse::<u16>().ok().and_then(|port| moved.get(&port)) {
            Some(port) if !database => out.push_str(&port.to_string()),
            _ => out.push_str(&digits),
        }
        rest = &rest[after_host + digits.len()..];
    }
    out.push_str(rest);
    out
}

/// Free ports on 127.0.0.1, one for each of `wanted`.
fn free_ports(wanted: impl IntoIterator<Item = u16>) -> BTreeMap<u16, u16> {
    let mut held = Vec::new();
    let mut moved = BTreeMap::new();
    for port in wanted {
        if moved.contains_key(&port) {
            continue;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        moved.insert(port, listener.local_addr().unwrap().port());
        // Held until every port is chosen, so no two are the same.
        held.push(listener);
    }
    moved
}

// ---------------------------------------------------------------------------------
// Running a page.

/// Fails with a clear message when a tool the recipes use is missing.
fn require_tools() {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|tool| {
            !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the documentation's recipes need {} on PATH; missing: {}",
        TOOLS.join(", "),
        missing.join(", ")
    );
}

/// A process that leads a process group of its own, killed with the whole group
/// when dropped.
struct Group {
    child: tokio::process::Child,
    /// Kept apart: the child forgets its id once it has been waited for, while the
    /// processes it started in the background may live on in its group.
    pid: u32,
}

impl Group {
    fn spawn(command: &mut tokio::process::Command) -> std::io::Result<Group> {
        let child = command.process_group(0).kill_on_drop(true).spawn()?;
        let pid = child.id().expect("a child just spawned has an id");
        Ok(Group { child, pid })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.pid);
        let _ = self.child.start_kill();
    }
}

/// Sends SIGKILL to the process group `pid` leads (the group outlives its leader).
fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes plain integers; a group that is gone gives ESRCH.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// Starts the quick-start server in `dir` on `address` (on `store` when given);
/// returns once it answers.
async fn start_quick_start_server(dir: &Path, address: &str, store: Option<&str>) -> Group {
    let log = std::fs::File::create(dir.join("quick-start.log")).unwrap();
    let mut server = Group::spawn(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hopper"))
            .arg("serve")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOPPER_ADMIN_SECRET", QUICK_START_SECRET)
            .env("HOPPER_LISTEN", address)
            .envs(store.map(|store| ("HOPPER_STORE", store)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .expect("the hopper binary starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = reqwest::get(format!("http://{address}/health")).await;
        if health.is_ok_and(|answer| answer.status() == 200) {
            return server;
        }
        let log = std::fs::read_to_string(dir.join("quick-start.log")).unwrap_or_default();
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("the quick-start server stopped ({status}):\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "the quick-start server did not answer within 30 s:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the recipes of the page at `path` in order, in a fresh directory next to the
/// quick-start server; `postgres`: the base URL replacing the page's PostgreSQL;
/// `store`: the `HOPPER_STORE` of the server and of the recipes, when not the default.
async fn run_page_on(path: &str, postgres: Option<&str>, store: Option<&str>) {
    require_tools();
    let page = Page::read(path);
    let blocks = blocks(&page).unwrap_or_else(|error| panic!("{error}"));
    let recipes: Vec<&Block> = blocks
        .iter()
        .filter(|block| matches!(block.marker, Some(Marker::Recipe { .. })))
        .collect();
    assert!(!recipes.is_empty(), "{path} has no recipe");
    let needs_postgres = recipes
        .iter()
        .any(|block| matches!(block.marker, Some(Marker::Recipe { postgres: true, .. })));
    assert_eq!(
        needs_postgres,
        postgres.is_some(),
        "{path}: a page's recipes run on PostgreSQL all, or none (its trial is in the postgres section or not)"
    );

    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hopper"), release.join("hopper")).unwrap();

    let all_text: String = recipes.iter().map(|block| block.text.as_str()).collect();
    let moved = free_ports(ports(&all_text).into_iter().chain([8080]));
    let schema = postgres.map(PgSchema::new);
    let rewrite = |text: &str| {
        let text = match &schema {
            Some(schema) => text.replace(PAGE_POSTGRES_URL, &schema.store_url()),
            None => text.to_owned(),
        };
        moved_ports(&text, &moved)
    };
    if postgres.is_some() {
        assert!(
            all_text.contains(PAGE_POSTGRES_URL),
            "{path}: its PostgreSQL recipes must use {PAGE_POSTGRES_URL}, which the test replaces by a schema of its own"
        );
    }

    let mut script = String::from(PREAMBLE);
    for (index, block) in recipes.iter().enumerate() {
        script.push_str(&format!("printf '\\n\\036{index}\\n'\n"));
        let checked = with_checks(path, block.first_line, &rewrite(&block.text))
            .unwrap_or_else(|error| panic!("{error}"));
        script.push_str(&checked);
    }
    script.push_str("printf '\\n\\036end\\n'\n");
    std::fs::write(dir.path().join("recipes.sh"), &script).unwrap();

    let quick_start = moved_ports(QUICK_START_ADDRESS, &moved);
    let server = start_quick_start_server(dir.path(), &quick_start, store).await;

    let mut bash = tokio::process::Command::new("bash");
    bash.args(["-euo", "pipefail", "recipes.sh"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .envs(store.map(|store| ("HOPPER_STORE", store)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut bash = Group::spawn(&mut bash).expect("bash starts");
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for pipe in [
        bash.child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        bash.child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let output = output.clone();
        readers.push(tokio::spawn(async move {
            let mut pipe = pipe;
            let mut buffer = [0u8; 8192];
            while let Ok(read @ 1..) = pipe.read(&mut buffer).await {
                output.lock().unwrap().extend_from_slice(&buffer[..read]);
            }
        }));
    }
    let status = tokio::time::timeout(PAGE_TIMEOUT, bash.child.wait()).await;
    // Servers and workers the recipes left running share bash's process group.
    drop(bash);
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    let server_log =
        std::fs::read_to_string(dir.path().join("quick-start.log")).unwrap_or_default();
    drop(server);
    let output = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();

    let outcome = match status {
        Err(_) => Some(format!("timed out after {PAGE_TIMEOUT:?}")),
        Ok(Ok(status)) if status.success() && output.contains(&format!("{BLOCK_MARK}end\n")) => {
            None
        }
        Ok(Ok(status)) => Some(format!("exit status {}", status.code().unwrap_or(-1))),
        Ok(Err(error)) => Some(format!("bash could not be waited for: {error}")),
    };
    let Some(outcome) = outcome else {
        drop(schema);
        return;
    };
    // The output of each recipe follows its mark; the last mark is the failing recipe's.
    let (failed, failed_output) = output
        .rsplit_once(BLOCK_MARK)
        .map(|(_, rest)| {
            let (index, text) = rest.split_once('\n').unwrap_or((rest, ""));
            (index.parse::<usize>().ok(), text.to_owned())
        })
        .unwrap_or((None, output.clone()));
    let report = match failed.and_then(|index| recipes.get(index)) {
        Some(block) => format!(
            "{path}:{}: recipe {:?} failed ({outcome}).\n--- the recipe ---\n{}--- its output ---\n{}\n--- the quick-start server's log ---\n{server_log}",
            block.first_line,
            block.recipe_name(),
            block.text,
            failed_output.trim_matches('\n'),
        ),
        None => format!(
            "{path}: the recipes failed ({outcome}) before the first one ran:\n{output}"
        ),
    };
    drop(schema);
    panic!("{report}");
}

// ---------------------------------------------------------------------------------
// Tests of the pages themselves.

fn every_shell_block_is_marked_and_every_page_with_recipes_is_run() {
    let mut problems = Vec::new();
    for page in pages() {
        let blocks = match blocks(&page) {
            Ok(blocks) => blocks,
            Err(error) => {
                problems.push(error);
                continue;
            }
        };
        let mut names = Vec::new();
        for block in &blocks {
            let at = format!("{}:{}", page.path, block.first_line - 1);
            match (&block.marker, block.is_shell()) {
                (Some(_), true) if block.language != "sh" => {
                    problems.push(format!("{at}: write shell blocks as ```sh"))
                }
                (None, true) => problems.push(format!(
                    "{at}: a shell block needs <!-- recipe: NAME --> or <!-- not run: REASON --> right above it"
                )),
                (Some(_), false) => problems.push(format!(
                    "{at}: only shell blocks are recipes; this one is ```{}",
                    block.language
                )),
                _ => {}
            }
            if let Some(Marker::Recipe { name, .. }) = &block.marker {
                if names.contains(name) {
                    problems.push(format!("{at}: a second recipe named {name:?}"));
                }
                names.push(name.clone());
            }
        }
        if !names.is_empty() && !PAGES_RUN.contains(&page.path.as_str()) {
            problems.push(format!(
                "{} has recipes but no trial runs it: add it to PAGES_RUN and trials!",
                page.path
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The harness itself: a promised output is checked, `…` matches anything, and a
/// mismatch stops the script with the line that promised it.
fn an_expectation_comment_checks_the_output() {
    let recipe = "echo '{\"id\":\"12\"}'   # → {\"id\":\"…\"}\n\
                  printf '%s %s' \"it's\" \\\n  fine   # → it's fine\n\
                  echo '{\n  \"a\": \"# no comment\"\n}' | jq -c .   # → {\"a\":\"# no comment\"}\n\
                  cat > x.txt <<'EOF'\n\
                  echo 'not a command'   # → never checked\n\
                  EOF\n\
                  echo no   # → yes\n\
                  echo unreachable\n";
    let script = format!(
        "{PREAMBLE}{}",
        with_checks("page.md", 10, recipe).expect("the recipe converts")
    );
    let dir = tempfile::tempdir().unwrap();
    let run = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    let output = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(99), "{output}");
    assert!(
        output.contains("{\"id\":\"12\"}\nit's fine\n{\"a\":\"# no comment\"}\nno\n"),
        "{output}"
    );
    assert!(
        output.contains("page.md:19: the output above is not what its comment says: yes"),
        "{output}"
    );
    assert!(!output.contains("unreachable"), "{output}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("x.txt")).unwrap(),
        "echo 'not a command'   # → never checked\n"
    );
    assert_eq!(
        moved_ports(
            "http://127.0.0.1:8080/x 127.0.0.1:8081 postgres://u@127.0.0.1:8080/db",
            &BTreeMap::from([(8080, 1234), (8081, 4321)])
        ),
        "http://127.0.0.1:1234/x 127.0.0.1:4321 postgres://u@127.0.0.1:8080/db"
    );
    assert!(with_checks("page.md", 1, "cat <<EOF\nnever closed\n").is_err());
}

fn every_marked_configuration_loads() {
    let mut loaded = 0;
    for page in pages() {
        for block in blocks(&page).unwrap_or_else(|error| panic!("{error}")) {
            let Some(name) = &block.config else { continue };
            let at = format!("{}:{} (config {name})", page.path, block.first_line);
            let text = match block.language.as_str() {
                "toml" => block.text.clone(),
                _ => heredoc_body(&block.text)
                    .unwrap_or_else(|| panic!("{at}: the block writes no file with a heredoc")),
            };
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("hopper.toml");
            std::fs::write(&file, &text).unwrap();
            if let Err(error) = Config::load(Overrides {
                config: Some(file),
                ..Overrides::default()
            }) {
                panic!("{at} does not load: {error:#}\n{text}");
            }
            loaded += 1;
        }
    }
    assert!(loaded >= 5, "only {loaded} marked configurations found");
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (outside code blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(heading) = line.strip_prefix('#') {
            let base = anchor(heading.trim_start_matches('#'));
            // A repeated heading gets `-1`, `-2`, ... as on GitHub.
            let repeats = bases.iter().filter(|b| **b == base).count();
            found.push(match repeats {
                0 => base.clone(),
                n => format!("{base}-{n}"),
            });
            bases.push(base);
        }
    }
    found
}

/// Visible text of a page: code blocks, inline code and HTML comments left out.
fn prose(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut in_code = false;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || line.trim_start().starts_with("<!--") {
            continue;
        }
        let visible: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        lines.push((number + 1, visible));
    }
    lines
}

fn links_stay_in_the_repository_and_resolve() {
    let pages = pages();
    let mut problems = Vec::new();
    for page in &pages {
        let dir = Path::new(&page.path).parent().unwrap_or(Path::new(""));
        for (number, line) in prose(&page.text) {
            let at = format!("{}:{number}", page.path);
            for word in ["DESIGN.md", "../shared", "STYLE.md"] {
                if line.contains(word) {
                    problems.push(format!("{at}: {word} is not in the repository"));
                }
            }
            let lower = line.to_lowercase();
            for (index, _) in lower.match_indices("seed") {
                let after: String = lower[index + 4..].chars().take(4).collect();
                let digits = after.trim_start_matches([' ', '-', '#']);
                if digits.len() >= 3 && digits[..3].chars().all(|c| c.is_ascii_digit()) {
                    problems.push(format!("{at}: name the system rather than its seed number"));
                }
            }
            let mut rest = line.as_str();
            while let Some(start) = rest.find("](") {
                let target_start = &rest[start + 2..];
                let Some(end) = target_start.find(')') else {
                    break;
                };
                let target = &target_start[..end];
                rest = &target_start[end..];
                if target.contains("://") || target.starts_with("mailto:") {
                    problems.push(format!("{at}: the link {target} leaves the repository"));
                    continue;
                }
                let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
                let resolved = if file.is_empty() {
                    PathBuf::from(&page.path)
                } else {
                    normalize(&dir.join(file))
                };
                if resolved.starts_with("..") || !root().join(&resolved).exists() {
                    problems.push(format!(
                        "{at}: the link {target} names no file of the repository"
                    ));
                    continue;
                }
                if !fragment.is_empty() {
                    let text = std::fs::read_to_string(root().join(&resolved)).unwrap_or_default();
                    if !anchors(&text).iter().any(|a| a == fragment) {
                        problems.push(format!(
                            "{at}: the link {target} names no heading of {}",
                            resolved.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `path` without `.` and with each `dir/..` dropped; a leading `..` is kept.
fn normalize(path: &Path) -> PathBuf {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            other => parts.push(other.as_os_str()),
        }
    }
    parts.iter().collect()
}

/// `path` with each `{parameter}` as `{}`, so that names may differ.
fn path_shape(path: &str) -> String {
    let mut shape = String::new();
    let mut in_parameter = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_parameter = true;
                shape.push_str("{}");
            }
            '}' => in_parameter = false,
            _ if in_parameter => {}
            c => shape.push(c),
        }
    }
    shape
}

/// Every operation of the server's own `/openapi.json` (without config routes) is
/// named on the API page as `` `METHOD /path` ``, and every operation the page names
/// exists.
async fn the_api_page_names_every_operation_the_server_describes() {
    let app = common::spawn_app(&Backend::Sqlite).await;
    let description: serde_json::Value = app
        .request(reqwest::Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut described = std::collections::BTreeSet::new();
    for (path, item) in description["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head"] {
            if item.get(method).is_some() {
                described.insert(format!("{} {}", method.to_uppercase(), path_shape(path)));
            }
        }
    }
    let page = Page::read("docs/api.md");
    let mut named = std::collections::BTreeSet::new();
    for (_, line) in prose_with_code(&page.text) {
        for (index, part) in line.split('`').enumerate() {
            let Some((method, path)) = part.split_once(' ') else {
                continue;
            };
            let is_method = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"].contains(&method);
            if index % 2 == 1 && is_method && path.starts_with('/') && !path.contains(' ') {
                named.insert(format!("{method} {}", path_shape(path)));
            }
        }
    }
    let missing: Vec<&String> = described.difference(&named).collect();
    let unknown: Vec<&String> = named.difference(&described).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/api.md does not name {missing:?}; it names {unknown:?}, which /openapi.json does not describe"
    );
}

/// The lines of a page outside code blocks, inline code kept.
fn prose_with_code(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut in_code = false;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            lines.push((number + 1, line.to_owned()));
        }
    }
    lines
}

fn help(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hopper"))
        .args(args)
        .output()
        .expect("the hopper binary runs");
    assert!(output.status.success(), "hopper {args:?} failed");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

fn help_says_what_hopper_serves() {
    let top = help(&["--help"]).to_lowercase();
    for word in ["queues", "streams", "tasks", "deliver", "routes"] {
        assert!(
            top.contains(word),
            "hopper --help does not mention {word}:\n{top}"
        );
    }
    for args in [["serve", "--help"], ["serve", "-h"]] {
        let serve = help(&args);
        for word in ["HOPPER_ADMIN_SECRET", "RUST_LOG"] {
            assert!(
                serve.contains(word),
                "hopper {} does not mention {word}:\n{serve}",
                args.join(" ")
            );
        }
    }
}
