//! `hopper queues`, `hopper streams`, `hopper tasks`: an operator's commands over the
//! HTTP API of a running server, with the caller's own credentials, so they are held
//! to the same grants as any client. Never reads the store: what a command shows is
//! what the API answers, and `--json` prints that answer unchanged.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::domain::{QueueName, StreamName, TaskId};

/// Where no `--url` or `HOPPER_URL` says otherwise: `hopper serve`'s default address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// No command here waits on the server (no long-poll, no task wait), so an answer
/// this late means the server is stuck, not busy.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The options every command over the API takes.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "HOPPER_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// Client id to authenticate as (HTTP Basic, with --secret).
    #[arg(long, env = "HOPPER_USER", global = true)]
    pub user: Option<String>,
    /// The client's secret.
    // Generated secrets are base64url, so one in 32 starts with `-`.
    #[arg(
        long,
        env = "HOPPER_SECRET",
        hide_env_values = true,
        allow_hyphen_values = true,
        global = true
    )]
    pub secret: Option<String>,
    /// Print the server's JSON answer unchanged, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `hopper queues ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum QueuesCommand {
    /// Every queue the caller holds a grant on, with its message counts.
    List,
    /// A queue's counts, settings and tasks.
    Show {
        /// Queue name.
        queue: String,
    },
    /// The oldest ready messages, left as they are: not leased, attempts unchanged.
    Peek {
        /// Queue name.
        queue: String,
        /// How many to show, 1 to 100.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Delete every message of a queue, dead letters included; the queue stays.
    Purge {
        /// Queue name.
        queue: String,
    },
    /// Make a queue's dead letters ready again, with attempts reset to 0.
    Redrive {
        /// Queue name.
        queue: String,
    },
}

/// `hopper streams ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum StreamsCommand {
    /// Every stream the caller holds a grant on.
    List,
    /// A stream with its consumers' offsets and lag.
    Show {
        /// Stream name.
        stream: String,
    },
}

/// `hopper tasks ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum TasksCommand {
    /// A task: its status, attempts, result or error.
    Show {
        /// Task id.
        id: String,
    },
}

/// A command over the API, parsed.
#[derive(Debug, Clone)]
pub enum Command {
    /// `hopper queues ...`.
    Queues(QueuesCommand),
    /// `hopper streams ...`.
    Streams(StreamsCommand),
    /// `hopper tasks ...`.
    Tasks(TasksCommand),
}

/// Why a command failed; its text is what the person at the terminal reads.
#[derive(Debug)]
pub enum CliError {
    /// The server refused: its own error text (e.g. `Forbidden - needs grant ...`).
    Refused(String),
    /// No answer: the server is not there, or the connection broke.
    Unreachable {
        /// The URL that was asked.
        url: String,
        /// Why, from the innermost cause.
        reason: String,
    },
    /// The command line itself is wrong (a bad URL or name), before anything was sent.
    Usage(String),
    /// An answer that is not Hopper's (another server behind the URL, say).
    Unexpected(String),
    /// Standard output went away (a closed pipe).
    Output(std::io::Error),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Refused(text) => f.write_str(text),
            CliError::Unreachable { url, reason } => write!(
                f,
                "cannot reach Hopper at {url}: {reason} (is `hopper serve` running there? \
                 --url or HOPPER_URL names the server)"
            ),
            CliError::Usage(text) | CliError::Unexpected(text) => f.write_str(text),
            CliError::Output(error) => write!(f, "cannot write the output: {error}"),
        }
    }
}

impl std::error::Error for CliError {}

/// Runs `command` against the server of `remote`, printing to standard output.
pub async fn run(remote: &Remote, command: Command) -> Result<(), CliError> {
    let api = Api::new(remote)?;
    let output = match command {
        Command::Queues(command) => queues(&api, command).await?,
        Command::Streams(command) => streams(&api, command).await?,
        Command::Tasks(TasksCommand::Show { id }) => {
            let id = TaskId::parse(&id).map_err(|e| CliError::Usage(e.to_string()))?;
            let task = api
                .call(Method::GET, &["tasks", &id.to_string()], &[])
                .await?;
            api.render(task, key_values)?
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(CliError::Output)
}

async fn queues(api: &Api, command: QueuesCommand) -> Result<String, CliError> {
    match command {
        QueuesCommand::List => {
            let answer = api.call(Method::GET, &["queues"], &[]).await?;
            api.render(answer, |value| {
                let mut table = Table::new(&["queue", "ready", "leased", "delayed", "dead"]);
                for queue in items(value, "queues")? {
                    table.row(
                        ["name", "ready", "leased", "delayed", "dead"]
                            .iter()
                            .map(|key| text(&queue[*key]))
                            .collect(),
                    );
                }
                Ok(table.render())
            })
        }
        QueuesCommand::Show { queue } => {
            let queue = queue_name(&queue)?;
            let answer = api.call(Method::GET, &["queues", &queue], &[]).await?;
            api.render(answer, key_values)
        }
        QueuesCommand::Peek { queue, limit } => {
            let queue = queue_name(&queue)?;
            let limit = limit.to_string();
            let answer = api
                .call(
                    Method::GET,
                    &["queues", &queue, "messages"],
                    &[("limit", &limit)],
                )
                .await?;
            api.render(answer, |value| {
                let mut table = Table::new(&["id", "attempts", "enqueued_at", "body"]);
                for message in items(value, "messages")? {
                    let mut cells: Vec<String> = ["id", "attempts", "enqueued_at"]
                        .iter()
                        .map(|key| text(&message[*key]))
                        .collect();
                    // As JSON, always: a body `"7"` and a body `7` must not look alike.
                    cells.push(message["body"].to_string());
                    table.row(cells);
                }
                Ok(table.render())
            })
        }
        QueuesCommand::Purge { queue } => {
            let queue = queue_name(&queue)?;
            let answer = api
                .call(Method::POST, &["queues", &queue, "purge"], &[])
                .await?;
            api.render(answer, |value| {
                let purged = count(value, "purged")?;
                Ok(format!("purged {} of {queue}\n", plural(purged, "message")))
            })
        }
        QueuesCommand::Redrive { queue } => {
            let queue = queue_name(&queue)?;
            let answer = api
                .call(Method::POST, &["queues", &queue, "dead", "redrive"], &[])
                .await?;
            api.render(answer, |value| {
                let redriven = count(value, "redriven")?;
                Ok(format!(
                    "redrove {} of {queue}: ready again, attempts reset\n",
                    plural(redriven, "dead letter")
                ))
            })
        }
    }
}

async fn streams(api: &Api, command: StreamsCommand) -> Result<String, CliError> {
    match command {
        StreamsCommand::List => {
            let answer = api.call(Method::GET, &["streams"], &[]).await?;
            api.render(answer, |value| {
                let columns = ["name", "owner", "length", "first_event_id", "last_event_id"];
                let mut table = Table::new(&["stream", "owner", "length", "first", "last"]);
                for stream in items(value, "streams")? {
                    table.row(columns.iter().map(|key| text(&stream[*key])).collect());
                }
                Ok(table.render())
            })
        }
        StreamsCommand::Show { stream } => {
            let stream = StreamName::parse(&stream)
                .map_err(|e| CliError::Usage(e.to_string()))?
                .to_string();
            let answer = api.call(Method::GET, &["streams", &stream], &[]).await?;
            api.render(answer, |value| {
                let mut value = value.clone();
                let consumers = value
                    .as_object_mut()
                    .and_then(|object| object.remove("consumers"));
                let mut output = key_values(&value)?;
                let columns = ["consumer", "event_name", "offset", "lag"];
                let mut table = Table::new(&columns);
                for consumer in consumers
                    .as_ref()
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    table.row(columns.iter().map(|key| text(&consumer[*key])).collect());
                }
                output.push('\n');
                output.push_str(&table.render());
                Ok(output)
            })
        }
    }
}

/// A queue name checked here, so that a name the server would refuse, or one a URL
/// library rewrites (`..`), is never sent as a path.
fn queue_name(raw: &str) -> Result<String, CliError> {
    QueueName::parse(raw)
        .map(|name| name.to_string())
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// The HTTP client, the base URL and the credentials of every call.
struct Api {
    client: reqwest::Client,
    base: Url,
    remote: Remote,
}

/// A successful answer: its text as sent, and the JSON it holds.
struct Answer {
    text: String,
    value: Value,
}

impl Api {
    fn new(remote: &Remote) -> Result<Api, CliError> {
        let base = Url::parse(&remote.url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && !url.cannot_be_a_base())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--url {:?} is not an http:// or https:// URL",
                    remote.url
                ))
            })?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| CliError::Unexpected(format!("cannot start an HTTP client: {e}")))?;
        Ok(Api {
            client,
            base,
            remote: remote.clone(),
        })
    }

    /// `base/api/v1/<segments>?<query>`, each segment percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // A base such as `https://host/hopper/` keeps its prefix.
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends the request; a refusal becomes [`CliError::Refused`] with the server's text.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Answer, CliError> {
        let url = self.url(segments, query);
        let mut request = self.client.request(method, url.clone());
        if let Some(user) = &self.remote.user {
            request = request.basic_auth(user, self.remote.secret.as_ref());
        }
        let unreachable = |error: reqwest::Error| CliError::Unreachable {
            url: self.remote.url.clone(),
            reason: innermost_cause(&error),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let value = serde_json::from_str::<Value>(&text);
        if !status.is_success() {
            return Err(CliError::Refused(match value {
                // Hopper's error bodies are one JSON string: "<Reason> - <detail>".
                Ok(Value::String(reason)) => reason,
                _ => refusal_without_text(status, &text),
            }));
        }
        let value = value.map_err(|_| {
            CliError::Unexpected(format!(
                "{url} answered {status} with a body that is not JSON: is it Hopper?"
            ))
        })?;
        Ok(Answer { text, value })
    }

    /// The answer as `--json` wants it (unchanged), or as `human` renders it.
    fn render(
        &self,
        answer: Answer,
        human: impl FnOnce(&Value) -> Result<String, CliError>,
    ) -> Result<String, CliError> {
        if self.remote.json {
            let mut text = answer.text;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            return Ok(text);
        }
        human(&answer.value)
    }
}

/// A refusal whose body is not Hopper's error string (a proxy's page, say): the
/// status, and the body when it is short enough to read.
fn refusal_without_text(status: StatusCode, body: &str) -> String {
    let body = body.trim();
    if body.is_empty() || body.len() > 200 {
        status.to_string()
    } else {
        format!("{status}: {body}")
    }
}

/// The root cause of a failed request ("Connection refused"), which reqwest's own
/// message ("error sending request for url") leaves out.
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The array `key` of an answer.
fn items<'a>(value: &'a Value, key: &str) -> Result<&'a Vec<Value>, CliError> {
    value[key]
        .as_array()
        .ok_or_else(|| CliError::Unexpected(format!("the answer has no {key} list: {value}")))
}

/// The number `key` of an answer.
fn count(value: &Value, key: &str) -> Result<u64, CliError> {
    value[key]
        .as_u64()
        .ok_or_else(|| CliError::Unexpected(format!("the answer has no {key} count: {value}")))
}

/// `1 message`, `2 messages`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A JSON value as a table cell or a value line: strings bare, `null` as `-`,
/// anything else as compact JSON.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// An object as `key  value` lines, nested objects flattened to `outer.inner` keys,
/// keys aligned.
fn key_values(value: &Value) -> Result<String, CliError> {
    fn flatten(prefix: &str, value: &Value, lines: &mut Vec<(String, String)>) {
        match value {
            Value::Object(object) if !object.is_empty() => {
                for (key, inner) in object {
                    let key = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    flatten(&key, inner, lines);
                }
            }
            other => lines.push((prefix.to_owned(), text(other))),
        }
    }
    if !value.is_object() {
        return Err(CliError::Unexpected(format!(
            "the answer is not an object: {value}"
        )));
    }
    let mut lines = Vec::new();
    flatten("", value, &mut lines);
    // What the object is comes first; the rest stays in the answer's (sorted) order.
    lines.sort_by_key(|(key, _)| !matches!(key.as_str(), "id" | "name"));
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    Ok(lines
        .iter()
        .map(|(key, value)| format!("{key:width$}  {value}\n"))
        .collect())
}

/// Columns aligned for people: two spaces apart, numbers to the right.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let columns = self.header.len();
        let cell = |row: &Vec<String>, i: usize| row.get(i).cloned().unwrap_or_default();
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|row| cell(row, i).chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        // A column is numeric when every cell is a number (or `-`): counts line up.
        let numeric: Vec<bool> = (0..columns)
            .map(|i| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|row| {
                        let value = cell(row, i);
                        value == "-" || value.parse::<f64>().is_ok()
                    })
            })
            .collect();
        let mut output = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for i in 0..columns {
                let value = cell(row, i);
                let pad = widths[i].saturating_sub(value.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                if numeric[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(&value);
                } else {
                    line.push_str(&value);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            output.push_str(line.trim_end());
            output.push('\n');
        }
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let mut table = Table::new(&["queue", "ready"]);
        table.row(vec!["orders".into(), "5".into()]);
        table.row(vec!["a".into(), "120".into()]);
        assert_eq!(
            table.render(),
            "queue   ready\norders      5\na         120\n"
        );
    }

    #[test]
    fn key_values_flatten_nested_objects() {
        let shown =
            key_values(&json!({"dead": 0, "name": "q", "settings": {"retention": null}})).unwrap();
        assert_eq!(
            shown,
            "name                q\ndead                0\nsettings.retention  -\n"
        );
    }

    #[test]
    fn path_segments_are_percent_encoded_under_the_base_path() {
        let remote = Remote {
            url: "http://example.test/prefix/".into(),
            user: None,
            secret: None,
            json: false,
        };
        let api = Api::new(&remote).unwrap();
        let url = api.url(&["queues", "a b/c", "messages"], &[("limit", "5")]);
        assert_eq!(
            url.as_str(),
            "http://example.test/prefix/api/v1/queues/a%20b%2Fc/messages?limit=5"
        );
    }
}
